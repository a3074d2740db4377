# shellcheck shell=bash
# What the infra scripts do alike (sourced by each backend's env.sh): read their flags and
# install Debian's packages they need.

# `infra_flags die "usage" "$@"`: sets the variable of each flag the usage names to 1 when
# it is given (`[--clean]`: clean, which the script sets to 0 first); -h/--help prints the
# script's header comment; anything else dies (through `die`) with the usage.
infra_flags() {
  local die=$1 usage=$2 arg
  shift 2
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

# `infra_launch pid_file log COMMAND...`: runs the command in the background, in a session
# of its own (a Ctrl-C in the calling shell does not reach it) and without the scripts'
# lock (fd 8), its output to `log`. The wrapper shell writes its pid, then execs the
# command: the pid is the command's. Fails when the pid file is not written within 5 s.
infra_launch() {
  local pid_file=$1 log=$2 i
  shift 2
  rm -f "$pid_file"
  # shellcheck disable=SC2016 # $$ is for the inner shell
  setsid bash -c 'echo $$ >"$1"; shift; exec "$@"' infra-launch "$pid_file" "$@" \
    >"$log" 2>&1 </dev/null 8>&- &
  for ((i = 0; i < 50; i++)); do
    [[ -s "$pid_file" ]] && return 0
    sleep 0.1
  done
  return 1
}
