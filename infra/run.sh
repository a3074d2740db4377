#!/usr/bin/env bash
# `make run`: starts Kafka and the five services on loopback with the embedded defaults
# (SQLite files and artifacts under .run/data), waits until every service reports SERVING,
# runs the demo loop (DEMO=0 skips it), and keeps everything running until Ctrl-C, which
# stops them all in reverse order.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
run_dir=${FLYWHEEL_RUN_DIR:-$repo/.run}
mkdir -p "$run_dir/logs"

# service name and its gRPC port, in start order
services=(registry:50051 deployer:50052 gateway:8001 drift:50054 retrain:50055)

pids=()
started_kafka=0
shutdown() {
  trap - INT TERM EXIT
  echo "stopping Flywheel..." >&2
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do kill -TERM "${pids[$i]}" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if ((started_kafka)); then infra/kafka/stop.sh >&2 || true; fi
}
trap 'shutdown; exit 0' INT TERM
trap shutdown EXIT

if ! (exec 3<>/dev/tcp/127.0.0.1/"${KAFKA_PORT:-19092}") 2>/dev/null; then
  infra/kafka/start.sh >/dev/null
  started_kafka=1
fi

for entry in "${services[@]}"; do
  name=${entry%%:*}
  port=${entry##*:}
  upper=${name^^}
  # setsid: Ctrl-C reaches this script only, which then stops the services in reverse order.
  setsid env "FLYWHEEL_${upper}_GRPC__PORT=$port" "FLYWHEEL_${upper}_DATA_DIR=$run_dir/data/$name" \
    uv run --frozen python -m "flywheel_$name" >"$run_dir/logs/$name.log" 2>&1 &
  pids+=($!)
done

addresses=()
for entry in "${services[@]}"; do addresses+=("127.0.0.1:${entry##*:}"); done
uv run --frozen python -m flywheel_common.healthcheck --timeout 90 "${addresses[@]}" >&2 || { echo "a service did not start; logs: $run_dir/logs" >&2; exit 1; }
cat >&2 <<MSG

Flywheel is running (logs in $run_dir/logs):
  registry  127.0.0.1:50051    deployer  127.0.0.1:50052    gateway (KServe V2)  127.0.0.1:8001
  drift     127.0.0.1:50054    retrain   127.0.0.1:50055    Kafka                127.0.0.1:${KAFKA_PORT:-19092}
Press Ctrl-C to stop.
MSG
if [[ "${DEMO:-1}" != 0 ]]; then
  # The loop, end to end, on this platform (see examples/src/flywheel_examples/demo.py).
  uv run --frozen python -m flywheel_examples.demo --data-dir "$run_dir/data/examples" ||
    echo "the demo did not finish; the platform keeps running (logs: $run_dir/logs)" >&2
  echo "Flywheel keeps running; press Ctrl-C to stop." >&2
fi
wait -n "${pids[@]}" || true
echo "a service exited; see $run_dir/logs" >&2
exit 1
