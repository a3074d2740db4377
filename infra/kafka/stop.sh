#!/usr/bin/env bash
# Stops every local Kafka node started by start.sh/node.sh (both modes), by pid file: SIGTERM
# to all, up to KAFKA_STOP_TIMEOUT (30s) to exit, then SIGKILL; removes the pid files.
# --clean also deletes the nodes' data dirs and cluster ids (logs are kept); with --sasl-ssl
# also the CA, certificates and passwords. --sasl-ssl (or KAFKA_SECURITY=sasl-ssl) stops the
# broker of start.sh --sasl-ssl instead of the plaintext one.
set -euo pipefail
args=()
for arg in "$@"; do
  if [[ $arg == --sasl-ssl ]]; then export KAFKA_SECURITY=sasl-ssl; else args+=("$arg"); fi
done
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

clean=0
infra_flags kafka_die "stop.sh [--clean] [--sasl-ssl]" ${args[@]+"${args[@]}"}

[[ -d "$KAFKA_RUN_DIR" ]] || { kafka_log "nothing to stop ($KAFKA_RUN_DIR does not exist)"; exit 0; }
kafka_lock

# Signal both modes' nodes first, then wait: stopping a KRaft quorum one node at a time can
# leave the last ones waiting for a controller majority that is already gone.
pids=()
for mode in single cluster; do
  mapfile -t ids < <(kafka_node_ids "$mode")
  kafka_stop_nodes "$mode" TERM "${ids[@]}" &
  pids+=("$!")
done
rc=0
for pid in "${pids[@]}"; do wait "$pid" || rc=1; done
((rc == 0)) || kafka_die "some nodes could not be stopped"
rm -f "$KAFKA_RUN_DIR/bootstrap"

if ((clean)); then
  for mode in single cluster; do
    rm -rf "$(kafka_mode_dir "$mode")"/node-*/data "$(kafka_mode_dir "$mode")/cluster.id" \
      "$(kafka_mode_dir "$mode")/acls.applied"
  done
  rm -rf "$KAFKA_SECURITY_DIR"
  rm -f "$KAFKA_RUN_DIR/mode"
  kafka_log "removed data dirs under $KAFKA_RUN_DIR"
fi
kafka_log "stopped"
