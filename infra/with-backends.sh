#!/usr/bin/env bash
# Runs a command with the project's Kafka, PostgreSQL and Swift (S3) up on loopback, then
# stops the ones this script started, even when the command fails.
# Usage: infra/with-backends.sh [--kafka-cluster] [--no-swift] CMD [ARGS...]
#   --kafka-cluster  Kafka as the three-broker cluster of `infra/kafka/start.sh --cluster`
#                    (brokers on KAFKA_PORT, +100, +200); one already running is used as is
#   --no-swift       leave Swift out (for commands that need no S3)
#   --kafka-sasl-ssl also the SASL_SSL broker with ACLs of `infra/kafka/start.sh --sasl-ssl`, on
#                    KAFKA_SASL_PORT (default KAFKA_PORT+50); the tests that need it find it
#                    through FLYWHEEL_TEST_KAFKA_SASL_BOOTSTRAP and FLYWHEEL_TEST_KAFKA_SASL_DIR
#                    (without the flag they start one themselves)
# The command finds the backends through FLYWHEEL_TEST_KAFKA_BOOTSTRAP,
# FLYWHEEL_TEST_POSTGRES_URL and FLYWHEEL_TEST_S3_ENDPOINT, set here from KAFKA_PORT, PG_PORT
# and SWIFT_PORT unless already set.
set -euo pipefail
infra=$(cd "$(dirname "$0")" && pwd)
kafka_port=${KAFKA_PORT:-19092}
pg_port=${PG_PORT:-15432}
swift_port=${SWIFT_PORT:-18080}

kafka_sasl_port=${KAFKA_SASL_PORT:-$((kafka_port + 50))}

kafka_cluster=0 swift=1 kafka_sasl=0
while (($#)); do
  case $1 in
    --kafka-cluster) kafka_cluster=1 ;;
    --kafka-sasl-ssl) kafka_sasl=1 ;;
    --no-swift) swift=0 ;;
    *) break ;;
  esac
  shift
done
(($#)) || { echo "usage: infra/with-backends.sh [--kafka-cluster] [--kafka-sasl-ssl] [--no-swift] CMD [ARGS...]" >&2; exit 2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

started=()
stop_started() {
  local status=$?
  for backend in "${started[@]}"; do
    if [[ $backend == kafka-sasl-ssl ]]; then
      KAFKA_PORT=$kafka_sasl_port "$infra/kafka/stop.sh" --sasl-ssl >&2 || true
    else
      "$infra/$backend/stop.sh" >&2 || true
    fi
  done
  exit "$status"
}
trap stop_started EXIT

if ((kafka_cluster)); then
  brokers=("$kafka_port" $((kafka_port + 100)) $((kafka_port + 200)))
  open=0
  for port in "${brokers[@]}"; do port_open "$port" && open=$((open + 1)); done
  if ((open == 0)); then
    "$infra/kafka/start.sh" --cluster >/dev/null
    started+=(kafka)
  elif ((open < 3)); then
    echo "with-backends: only $open of the brokers on ports ${brokers[*]} answer; a three-broker" \
      "cluster is needed (stop what runs there, or set KAFKA_PORT)" >&2
    exit 1
  fi
  bootstrap=$(printf '127.0.0.1:%s,' "${brokers[@]}")
  export FLYWHEEL_TEST_KAFKA_BOOTSTRAP=${FLYWHEEL_TEST_KAFKA_BOOTSTRAP:-${bootstrap%,}}
else
  if ! port_open "$kafka_port"; then
    "$infra/kafka/start.sh" >/dev/null
    started+=(kafka)
  fi
  export FLYWHEEL_TEST_KAFKA_BOOTSTRAP=${FLYWHEEL_TEST_KAFKA_BOOTSTRAP:-127.0.0.1:$kafka_port}
fi
if ((kafka_sasl)); then
  if ! port_open "$kafka_sasl_port"; then
    KAFKA_PORT=$kafka_sasl_port "$infra/kafka/start.sh" --sasl-ssl >/dev/null
    started+=(kafka-sasl-ssl)
  fi
  export FLYWHEEL_TEST_KAFKA_SASL_BOOTSTRAP=${FLYWHEEL_TEST_KAFKA_SASL_BOOTSTRAP:-127.0.0.1:$kafka_sasl_port}
  export FLYWHEEL_TEST_KAFKA_SASL_DIR=${FLYWHEEL_TEST_KAFKA_SASL_DIR:-${FLYWHEEL_RUN_DIR:-$infra/../.run}/kafka-sasl-ssl/security}
fi
if ! port_open "$pg_port"; then
  "$infra/postgres/start.sh" >/dev/null
  started+=(postgres)
fi
export FLYWHEEL_TEST_POSTGRES_URL=${FLYWHEEL_TEST_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:$pg_port/flywheel}
if ((swift)); then
  if ! port_open "$swift_port"; then
    "$infra/swift/start.sh" >/dev/null
    started+=(swift)
  fi
  export FLYWHEEL_TEST_S3_ENDPOINT=${FLYWHEEL_TEST_S3_ENDPOINT:-http://127.0.0.1:$swift_port}
fi
"$@"
