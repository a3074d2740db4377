# shellcheck shell=bash
# What the infra scripts do alike (sourced by each backend's env.sh): read their flags and
# install Debian's packages they need.

# `infra_flags die "usage" "$@"`: sets the variable of each flag the usage names to 1 when
# given, else 0 (`[--clean]`: clean); -h/--help prints the script's header comment; anything
# else dies (through `die`) with the usage.
infra_flags() {
  local die=$1 usage=$2 arg flag
  shift 2
  for flag in $(grep -oE -- '\[--[a-z]+\]' <<<"$usage" | tr -d '[]-'); do
    printf -v "$flag" 0
  done
  for arg in "$@"; do
    if [[ $arg == -h || $arg == --help ]]; then
      sed -n '2,/^[^#]/s/^# \{0,1\}//p' "$0"
      exit 0
    elif [[ $arg == --* && $usage == *"[$arg]"* ]]; then
      printf -v "${arg#--}" 1
    else
      "$die" "unknown argument: $arg (usage: $usage)"
    fi
  done
}

# `infra_apt_install die log "what" PACKAGE...`: installs the packages with apt-get when
# running as root; otherwise dies saying which command would.
infra_apt_install() {
  local die=$1 log=$2 what=$3
  shift 3
  ((EUID == 0)) || "$die" "$what is not installed (sudo apt-get install -y $*)"
  "$log" "$what not found: installing Debian's $* with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq --no-install-recommends "$@" >&2
}
