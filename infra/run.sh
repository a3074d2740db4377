#!/usr/bin/env bash
# `make run`: starts Kafka and the five services on loopback with the embedded defaults
# (SQLite files and artifacts under .run/data), waits until every service reports SERVING,
# runs the demo loop (DEMO=0 skips it), and keeps everything running until Ctrl-C, which
# stops them all in reverse order.
#
# Secure as in production: every gRPC port serves TLS with a certificate of a local CA and
# requires a bearer token. `flywheel certs init` makes them on the first start, under .run/
# (tls/, tokens.json, and cli.env, which the CLI and the demo read); later starts reuse them.
#
# KAFKA_PORT picks the broker (default 19092; started from .run/kafka when nothing listens
# there); every service, the demo and the CLI hint use it. Each run logs into its own folder,
# .run/logs/<time>/<service>.log, with .run/logs/latest pointing at the newest; the newest
# FLYWHEEL_KEEP_RUNS folders (default 5) are kept.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
run_dir=${FLYWHEEL_RUN_DIR:-$repo/.run}
export KAFKA_PORT=${KAFKA_PORT:-19092}
kafka=127.0.0.1:$KAFKA_PORT
keep_runs=${FLYWHEEL_KEEP_RUNS:-5}

# service name and its gRPC port, in start order
services=(registry:50051 deployer:50052 gateway:8001 drift:50054 retrain:50055)

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for entry in "${services[@]}"; do
  if port_open "${entry##*:}"; then
    echo "port ${entry##*:} (the ${entry%%:*}) is taken: is Flywheel already running?" >&2
    exit 1
  fi
done

logs=$run_dir/logs/$(date +%Y%m%d-%H%M%S)
mkdir -p "$logs"
ln -sfn "$(basename "$logs")" "$run_dir/logs/latest"
# Older runs beyond the newest $keep_runs (the folder names sort by time).
mapfile -t old_runs < <(find "$run_dir/logs" -mindepth 1 -maxdepth 1 -type d -name '[0-9]*-[0-9]*' | sort -r | tail -n +$((keep_runs + 1)))
if ((${#old_runs[@]})); then rm -rf "${old_runs[@]}"; fi

flywheel() { uv run --frozen flywheel "$@"; }
flywheel certs init --dir "$run_dir" 2>&1 | sed 's/^/credentials: /' >&2
tls=$run_dir/tls
tokens=$(tr -d '\n' <"$run_dir/tokens.json")
reader_token=$(flywheel certs token reader --dir "$run_dir")
writer_token=$(flywheel certs token writer --dir "$run_dir")
# The health checks below trust the local CA.
export FLYWHEEL_HEALTHCHECK_TLS__CA_FILE=$tls/ca.pem

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

if ! port_open "$KAFKA_PORT"; then
  infra/kafka/start.sh >/dev/null
  started_kafka=1
fi

for entry in "${services[@]}"; do
  name=${entry%%:*}
  port=${entry##*:}
  upper=${name^^}
  # The retrain trigger promotes (and its training jobs register): the writer role. The
  # others only read from the registry.
  registry_token=$reader_token
  if [[ $name == retrain ]]; then registry_token=$writer_token; fi
  # setsid: Ctrl-C reaches this script only, which then stops the services in reverse order.
  setsid env "FLYWHEEL_${upper}_GRPC__PORT=$port" "FLYWHEEL_${upper}_DATA_DIR=$run_dir/data/$name" \
    "FLYWHEEL_${upper}_KAFKA__BOOTSTRAP_SERVERS=$kafka" \
    "FLYWHEEL_${upper}_GRPC__TLS__CERT_FILE=$tls/server.pem" \
    "FLYWHEEL_${upper}_GRPC__TLS__KEY_FILE=$tls/server-key.pem" \
    "FLYWHEEL_${upper}_GRPC__TLS__CLIENT_CA_FILE=$tls/ca.pem" \
    "FLYWHEEL_${upper}_AUTH__TOKENS=$tokens" \
    "FLYWHEEL_${upper}_REGISTRY_TOKEN=$registry_token" \
    "FLYWHEEL_${upper}_REGISTRY_TLS__CA_FILE=$tls/ca.pem" \
    "FLYWHEEL_${upper}_REGISTRY_TLS__CERT_FILE=$tls/client.pem" \
    "FLYWHEEL_${upper}_REGISTRY_TLS__KEY_FILE=$tls/client-key.pem" \
    uv run --frozen python -m "flywheel_$name" >"$logs/$name.log" 2>&1 &
  pids+=($!)
  if [[ $name == registry ]]; then
    # The others fetch artifacts and reference samples from it as they start: a gateway that
    # finds no registry leaves the models it must serve unloaded.
    uv run --frozen python -m flywheel_common.healthcheck --timeout 90 "127.0.0.1:$port" >/dev/null ||
      { echo "the registry did not start; logs: $logs" >&2; exit 1; }
  fi
done

addresses=()
for entry in "${services[@]}"; do addresses+=("127.0.0.1:${entry##*:}"); done
uv run --frozen python -m flywheel_common.healthcheck --timeout 90 "${addresses[@]}" >&2 || { echo "a service did not start; logs: $logs" >&2; exit 1; }
cli_kafka=""
if [[ $kafka != 127.0.0.1:19092 ]]; then cli_kafka="(flywheel alerts --follow: export FLYWHEEL_CLI_KAFKA=$kafka)"; fi
cat >&2 <<MSG

Flywheel is running (logs in $logs, also $run_dir/logs/latest):
  registry  127.0.0.1:50051    deployer  127.0.0.1:50052    gateway (KServe V2)  127.0.0.1:8001
  drift     127.0.0.1:50054    retrain   127.0.0.1:50055    its REST API  https://127.0.0.1:8000/v2
  Kafka     $kafka
TLS from the local CA $tls/ca.pem; bearer tokens in $run_dir/tokens.json (the CLI reads
$run_dir/cli.env: CA, client certificate and the admin token).
Press Ctrl-C to stop. $cli_kafka
MSG
if [[ "${DEMO:-1}" != 0 ]]; then
  # The loop, end to end, on this platform (see examples/src/flywheel_examples/demo.py).
  (set -a && source "$run_dir/cli.env" && FLYWHEEL_CLI_KAFKA=$kafka exec uv run --frozen python -m flywheel_examples.demo --data-dir "$run_dir/data/examples") ||
    echo "the demo did not finish; the platform keeps running (logs: $logs)" >&2
  echo "Flywheel keeps running; press Ctrl-C to stop." >&2
fi
wait -n "${pids[@]}" || true
echo "a service exited; see $logs" >&2
exit 1
