#!/usr/bin/env bash
# Starts a local Kafka (KRaft, combined broker+controller nodes) on 127.0.0.1 and waits until
# it serves. Default: one node, broker on $KAFKA_PORT (19092). --cluster: three nodes, brokers
# on 19092/19192/19292, replication factor 3, min.insync.replicas 2. Fetches the jars first if
# needed. Nodes already running are left alone. Prints the bootstrap servers on stdout (also
# written to .run/kafka/bootstrap); progress goes to stderr.
# --sasl-ssl (or KAFKA_SECURITY=sasl-ssl): clients connect with SASL_SSL (SCRAM-SHA-512 or
# PLAIN) and may do only what acls.conf grants; state, CA and passwords under
# .run/kafka-sasl-ssl (see security.sh). Stop it with stop.sh --sasl-ssl.
set -euo pipefail
for arg in "$@"; do [[ $arg == --sasl-ssl ]] && export KAFKA_SECURITY=sasl-ssl; done
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mode=single
for arg in "$@"; do
  case $arg in
    --cluster) mode=cluster ;;
    --single) mode=single ;;
    --sasl-ssl) ;;
    -h | --help) sed -n '2,9s/^# \{0,1\}//p' "$0"; exit 0 ;;
    *) kafka_die "unknown argument: $arg (usage: start.sh [--cluster] [--sasl-ssl])" ;;
  esac
done

kafka_lock
if running=$(kafka_running_mode) && [[ $running != "$mode" ]]; then
  kafka_die "a $running Kafka is running from $KAFKA_RUN_DIR; stop it first (infra/kafka/stop.sh)"
fi

echo "$mode" >"$KAFKA_RUN_DIR/mode"
mapfile -t ids < <(kafka_node_ids "$mode")
all_up=1
for id in "${ids[@]}"; do kafka_node_pid "$mode" "$id" >/dev/null || all_up=0; done
if ((all_up)); then
  kafka_log "$mode Kafka already running; nothing to do"
else
  start=$SECONDS
  kafka_start_nodes "$mode" "${ids[@]}"
  kafka_log "$mode Kafka $KAFKA_VERSION ready in $((SECONDS - start))s"
fi
echo "$mode" >"$KAFKA_RUN_DIR/mode"
kafka_bootstrap "$mode" | tee "$KAFKA_RUN_DIR/bootstrap"
