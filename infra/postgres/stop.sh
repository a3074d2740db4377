#!/usr/bin/env bash
# Stops the local PostgreSQL started by infra/postgres/start.sh: pg_ctl stop -m fast, falling
# back to signalling the pid in postmaster.pid (SIGINT, then SIGQUIT, then SIGKILL) when
# pg_ctl fails. --clean also deletes the cluster (data and logs).
set -euo pipefail
# shellcheck source=env.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"

clean=0
infra_flags pg_die "stop.sh [--clean]" "$@"

[[ -d "$PG_RUN_ROOT" ]] && pg_lock
pg_pick_home
if pid=$(pg_server_pid); then
  pg_log "stopping server (pid $pid)"
  pg_find_bin || true
  if [[ -z "${PG_BIN:-}" ]] || ! pg_as_owner "$PG_BIN/pg_ctl" --pgdata="$PG_DATA" --mode=fast \
    --wait --timeout="$PG_STOP_TIMEOUT" --silent stop; then
    pg_log "pg_ctl stop failed; signalling pid $pid"
    for signal in INT QUIT KILL; do
      kill -s "$signal" "$pid" 2>/dev/null || true
      for ((i = 0; i < PG_STOP_TIMEOUT * 5; i++)); do
        pg_server_pid >/dev/null || break 2
        sleep 0.2
      done
      pg_log "still running after SIG$signal"
    done
    pg_server_pid >/dev/null && pg_die "could not stop pid $pid"
  fi
  pg_log "stopped"
else
  pg_log "not running"
fi
rm -f "$PG_RUN_ROOT/postgres.url"

if ((clean)); then
  rm -rf "$PG_HOME"
  [[ -L "$PG_RUN_ROOT/postgres" ]] && rm -f "$PG_RUN_ROOT/postgres"
  pg_log "removed $PG_HOME"
fi
