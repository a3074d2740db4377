#!/usr/bin/env bash
# Stops the local Swift started by infra/swift/start.sh, by pid file: SIGTERM to each
# server, up to SWIFT_STOP_TIMEOUT (20s) to exit, then SIGKILL. --clean also deletes its
# state (configs, rings, stored objects, logs).
set -euo pipefail
# shellcheck source=env.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

clean=0
infra_flags swift_die "stop.sh [--clean]" "$@"

[[ -d "$SWIFT_RUN_ROOT" ]] && swift_lock
stopping=()
for server in "${SWIFT_SERVERS[@]}"; do
  if pid=$(swift_server_pid "$server"); then
    swift_log "stopping $server (pid $pid)"
    kill -s TERM "$pid" 2>/dev/null || true
    stopping+=("$server")
  fi
done
((${#stopping[@]})) || swift_log "not running"

deadline=$((SECONDS + SWIFT_STOP_TIMEOUT))
for server in ${stopping[@]+"${stopping[@]}"}; do
  while pid=$(swift_server_pid "$server"); do
    if ((SECONDS >= deadline)); then
      swift_log "$server still running after ${SWIFT_STOP_TIMEOUT}s: SIGKILL"
      kill -s KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.1
  done
  rm -f "$(swift_pid_file "$server")"
done
((${#stopping[@]})) && swift_log "stopped"
rm -f "$SWIFT_RUN_ROOT/swift.env"

if ((clean)); then
  rm -rf "$SWIFT_FALLBACK_HOME"
  rm -rf "$SWIFT_HOME"
  swift_log "removed $SWIFT_HOME"
fi
