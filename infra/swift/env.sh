# shellcheck shell=bash disable=SC2034 # the variables are for the scripts that source it
# Shared settings and helpers for infra/swift/start.sh and stop.sh (sourced).
# A throwaway OpenStack Swift from Debian's packages: one proxy with the s3api and tempauth
# middleware (the S3 endpoint, on 127.0.0.1:$SWIFT_PORT only) in front of one account, one
# container and one object server on the next three ports, each a single process, with
# one-replica rings over one device that is a plain folder (mount_check = false).
#
# Environment overrides:
#   FLYWHEEL_RUN_DIR     runtime state root (default: <repo>/.run); the state lives in
#                        $FLYWHEEL_RUN_DIR/swift, or in /var/tmp/flywheel-swift-<uid>-<hash>
#                        when that file system has no user xattrs, which Swift's object
#                        server needs (then $FLYWHEEL_RUN_DIR/swift is a symlink to it)
#   SWIFT_PORT           S3 endpoint port (default: 18080); the account, container and
#                        object servers listen on SWIFT_PORT+1, +2 and +3, the proxy's
#                        memcached (tempauth's tokens, account and container info) on +4
#   SWIFT_BUCKET         bucket created at start (default: flywheel)
#   SWIFT_REGION         region of the S3 v4 signatures (default: us-east-1)
#   SWIFT_START_TIMEOUT  seconds to wait for readiness (default: 60)
#   SWIFT_STOP_TIMEOUT   seconds to wait after SIGTERM before SIGKILL (default: 20)

SWIFT_INFRA_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../common.sh source-path=SCRIPTDIR
source "$SWIFT_INFRA_DIR/../common.sh"
FLYWHEEL_REPO_DIR=$(cd "$SWIFT_INFRA_DIR/../.." && pwd)
SWIFT_RUN_ROOT=${FLYWHEEL_RUN_DIR:-$FLYWHEEL_REPO_DIR/.run}
[[ $SWIFT_RUN_ROOT == /* ]] || SWIFT_RUN_ROOT=$PWD/$SWIFT_RUN_ROOT
SWIFT_HOST=127.0.0.1
SWIFT_PORT=${SWIFT_PORT:-18080}
SWIFT_BUCKET=${SWIFT_BUCKET:-flywheel}
SWIFT_REGION=${SWIFT_REGION:-us-east-1}
SWIFT_START_TIMEOUT=${SWIFT_START_TIMEOUT:-60}
SWIFT_STOP_TIMEOUT=${SWIFT_STOP_TIMEOUT:-20}
# tempauth's user <account>:<user> is the S3 access key id, its key the secret.
SWIFT_ACCESS_KEY_ID=flywheel:tester
SWIFT_SECRET_ACCESS_KEY=flywheel-secret
# shellcheck disable=SC2034 # used by start.sh
SWIFT_ENDPOINT=http://$SWIFT_HOST:$SWIFT_PORT
SWIFT_SERVERS=(memcached account container object proxy)

swift_log() { echo "swift: $*" >&2; }
swift_die() { echo "swift: error: $*" >&2; exit 1; }

swift_installed() {
  [[ -x /usr/bin/swift-proxy-server && -x /usr/bin/swift-account-server &&
    -x /usr/bin/swift-container-server && -x /usr/bin/swift-object-server &&
    -x /usr/bin/memcached ]]
}

swift_server_port() {
  case $1 in
    proxy) echo "$SWIFT_PORT" ;;
    account) echo $((SWIFT_PORT + 1)) ;;
    container) echo $((SWIFT_PORT + 2)) ;;
    object) echo $((SWIFT_PORT + 3)) ;;
    memcached) echo $((SWIFT_PORT + 4)) ;;
  esac
}

swift_has_xattrs() {
  /usr/bin/python3 - "$1" <<'EOF' 2>/dev/null
import os, sys, tempfile
with tempfile.NamedTemporaryFile(dir=sys.argv[1]) as probe:
    os.setxattr(probe.name, "user.flywheel.probe", b"1")
EOF
}

# The state folder: $SWIFT_RUN_ROOT/swift, a symlink to SWIFT_FALLBACK_HOME when the run
# dir's file system had no user xattrs at the first start (see swift_make_home).
SWIFT_HOME=$SWIFT_RUN_ROOT/swift
SWIFT_FALLBACK_HOME=/var/tmp/flywheel-swift-$(id -u)-$(printf '%s' "$SWIFT_RUN_ROOT" | sha256sum | cut -c1-8)
SWIFT_ETC=$SWIFT_HOME/etc
SWIFT_DEVICES=$SWIFT_HOME/devices

swift_pid_file() { echo "$SWIFT_HOME/run/$1.pid"; }
swift_conf_file() { echo "$SWIFT_ETC/$1-server.conf"; }

# What the command line of a server of this state dir contains (its config file; for
# memcached, which has none, its address).
swift_cmdline_mark() {
  if [[ $1 == memcached ]]; then
    echo "-l $SWIFT_HOST -p $(swift_server_port memcached) "
  else
    echo " $(swift_conf_file "$1") "
  fi
}

# Prints the pid of a server if it runs: the pid file names a live process whose command
# line is this state dir's server (guards against pid reuse).
swift_server_pid() {
  local pid_file pid cmdline
  pid_file=$(swift_pid_file "$1")
  [[ -s "$pid_file" ]] || return 1
  pid=$(<"$pid_file")
  [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) " || return 1
  [[ "$cmdline" == *"$(swift_cmdline_mark "$1")"* ]] || return 1
  echo "$pid"
}

swift_port_open() { (exec 3<>"/dev/tcp/$SWIFT_HOST/$1") 2>/dev/null; }

# Serialises start/stop on one run dir (fd 8, closed for the servers so they do not hold it).
swift_lock() {
  mkdir -p "$SWIFT_RUN_ROOT"
  exec 8>"$SWIFT_RUN_ROOT/.swift.lock"
  flock 8
}
