#!/usr/bin/env bash
# Controls one node of the local Kafka, for fault tests:
#   node.sh start|stop|kill|status <id> [--cluster|--single]
# stop = SIGTERM (controlled shutdown, SIGKILL after KAFKA_STOP_TIMEOUT), kill = SIGKILL
# (crash). The mode defaults to the one running, else the one last started by start.sh.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() { kafka_die "usage: node.sh start|stop|kill|status <id> [--cluster|--single]"; }
action="" id="" mode=""
for arg in "$@"; do
  case $arg in
    --cluster) mode=cluster ;;
    --single) mode=single ;;
    -h | --help) sed -n '2,5s/^# \{0,1\}//p' "$0"; exit 0 ;;
    start | stop | kill | status) [[ -z $action ]] || usage; action=$arg ;;
    [0-9]*) [[ -z $id ]] || usage; id=$arg ;;
    *) usage ;;
  esac
done
[[ -n $action && -n $id ]] || usage

kafka_lock
if [[ -z $mode ]]; then
  mode=$(kafka_running_mode) || mode=$(cat "$KAFKA_RUN_DIR/mode" 2>/dev/null) || mode=single
fi
kafka_node_ids "$mode" | grep -qx "$id" || kafka_die "no node $id in $mode mode"
if running=$(kafka_running_mode) && [[ $running != "$mode" ]]; then
  kafka_die "a $running Kafka is running; node $id of $mode mode is not part of it"
fi

case $action in
  start)
    kafka_start_nodes "$mode" "$id"
    echo "$KAFKA_HOST:$(kafka_broker_port "$id")"
    ;;
  stop) kafka_stop_nodes "$mode" TERM "$id" ;;
  kill) kafka_stop_nodes "$mode" KILL "$id" ;;
  status)
    if pid=$(kafka_node_pid "$mode" "$id"); then
      echo "$mode node $id running (pid $pid, broker $KAFKA_HOST:$(kafka_broker_port "$id"))"
    else
      echo "$mode node $id stopped"
      exit 3
    fi
    ;;
esac
