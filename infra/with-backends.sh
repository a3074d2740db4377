#!/usr/bin/env bash
# Runs a command with the project's Kafka, PostgreSQL and Swift (S3) up on loopback, then
# stops the ones this script started, even when the command fails.
# Usage: infra/with-backends.sh CMD [ARGS...]
set -euo pipefail
infra=$(cd "$(dirname "$0")" && pwd)
kafka_port=${KAFKA_PORT:-19092}
pg_port=${PG_PORT:-15432}
swift_port=${SWIFT_PORT:-18080}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

started=()
stop_started() {
  local status=$?
  for backend in "${started[@]}"; do "$infra/$backend/stop.sh" >&2 || true; done
  exit "$status"
}
trap stop_started EXIT

if ! port_open "$kafka_port"; then
  "$infra/kafka/start.sh" >/dev/null
  started+=(kafka)
fi
if ! port_open "$pg_port"; then
  "$infra/postgres/start.sh" >/dev/null
  started+=(postgres)
fi
if ! port_open "$swift_port"; then
  "$infra/swift/start.sh" >/dev/null
  started+=(swift)
fi
"$@"
