# shellcheck shell=bash
# Shared settings and helpers for infra/postgres/start.sh and stop.sh (sourced).
# A throwaway PostgreSQL cluster from Debian's packages, owned by the `postgres` system user
# when run as root (initdb refuses root), listening on 127.0.0.1:$PG_PORT only.
#
# Environment overrides:
#   FLYWHEEL_RUN_DIR  runtime state root (default: <repo>/.run); the cluster lives in
#                     $FLYWHEEL_RUN_DIR/postgres, or in /tmp/flywheel-postgres-<uid>-<hash>
#                     when the postgres user cannot reach that folder or the socket path
#                     would be too long (then $FLYWHEEL_RUN_DIR/postgres is a symlink to it)
#   PG_PORT           TCP port (default: 15432)
#   PG_DB             database created at start (default: flywheel)
#   PG_BIN            PostgreSQL bin folder (default: newest /usr/lib/postgresql/*/bin)
#   PG_START_TIMEOUT  seconds to wait for readiness (default: 60)
#   PG_STOP_TIMEOUT   seconds to wait for shutdown (default: 30)

PG_INFRA_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../common.sh source-path=SCRIPTDIR
source "$PG_INFRA_DIR/../common.sh"
FLYWHEEL_REPO_DIR=$(cd "$PG_INFRA_DIR/../.." && pwd)
PG_RUN_ROOT=${FLYWHEEL_RUN_DIR:-$FLYWHEEL_REPO_DIR/.run}
[[ $PG_RUN_ROOT == /* ]] || PG_RUN_ROOT=$PWD/$PG_RUN_ROOT
PG_HOST=127.0.0.1
PG_PORT=${PG_PORT:-15432}
PG_DB=${PG_DB:-flywheel}
PG_SUPERUSER=postgres
PG_START_TIMEOUT=${PG_START_TIMEOUT:-60}
PG_STOP_TIMEOUT=${PG_STOP_TIMEOUT:-30}
# shellcheck disable=SC2034 # used by start.sh
PG_URL="postgresql+psycopg://$PG_SUPERUSER@$PG_HOST:$PG_PORT/$PG_DB"

pg_log() { echo "postgres: $*" >&2; }
pg_die() { echo "postgres: error: $*" >&2; exit 1; }

# Sets PG_BIN to the newest installed server's bin folder; returns 1 if there is none.
pg_find_bin() {
  if [[ -n "${PG_BIN:-}" ]]; then
    [[ -x "$PG_BIN/initdb" ]] || pg_die "PG_BIN=$PG_BIN has no initdb"
    return 0
  fi
  local dir
  dir=$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null |
    sort -V | tail -n 1)
  [[ -n "$dir" ]] || return 1
  PG_BIN=$(dirname "$dir")
}

# The OS user that owns and runs the cluster: postgres when we are root, else ourselves.
if ((EUID == 0)); then PG_OS_USER=postgres; else PG_OS_USER=$(id -un); fi

# Runs a command as PG_OS_USER, from / (the caller's cwd may be unreadable to that user).
pg_as_owner() {
  if ((EUID == 0)); then
    (cd / && runuser -u "$PG_OS_USER" -- "$@")
  else
    (cd / && "$@")
  fi
}

# Sets PG_HOME (cluster folder: data/, server log, unix socket). Deterministic, so start.sh
# and stop.sh agree: the run dir when the owner can reach it and the socket path fits in
# the 107 bytes Linux allows, else a folder under /tmp.
pg_pick_home() {
  local preferred=$PG_RUN_ROOT/postgres sock_len
  sock_len=$((${#preferred} + ${#PG_PORT} + 10)) # "/.s.PGSQL.<port>"
  if ((sock_len <= 100)) && [[ -d "$PG_RUN_ROOT" ]] && id -u "$PG_OS_USER" >/dev/null 2>&1 &&
    pg_as_owner test -x "$PG_RUN_ROOT" && [[ ! -L "$preferred" ]]; then
    PG_HOME=$preferred
  else
    PG_HOME=/tmp/flywheel-postgres-$(id -u)-$(printf '%s' "$PG_RUN_ROOT" | sha256sum | cut -c1-8)
  fi
  PG_DATA=$PG_HOME/data
}

# Prints the postmaster pid if it runs for PG_DATA (pid file + matching command line).
pg_server_pid() {
  local pid cmdline
  [[ -r "$PG_DATA/postmaster.pid" ]] || return 1
  pid=$(head -n 1 "$PG_DATA/postmaster.pid")
  [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ "$cmdline" == *postgres*" -D $PG_DATA"* ]] || return 1
  echo "$pid"
}

pg_port_open() { (exec 3<>"/dev/tcp/$PG_HOST/$1") 2>/dev/null; }

# Serialises start/stop on one run dir (fd 8, closed for the server so it does not hold it).
pg_lock() {
  mkdir -p "$PG_RUN_ROOT"
  exec 8>"$PG_RUN_ROOT/.postgres.lock"
  flock 8
}
