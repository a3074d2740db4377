# shellcheck shell=bash
# Shared settings and helpers for the local Kafka scripts (sourced by fetch.sh, start.sh,
# stop.sh, node.sh, tool.sh; may also be sourced by a shell to get the variables).
# Versions come from pom.xml; jars live in a cache outside git, runtime state in the run dir.
#
# Environment overrides:
#   FLYWHEEL_CACHE_DIR  jar cache root            (default: ~/.cache/flywheel)
#   FLYWHEEL_RUN_DIR    runtime state root        (default: <repo>/.run)
#   KAFKA_SECURITY      plaintext (default) or sasl-ssl (what start.sh --sasl-ssl sets): SASL_SSL
#                       listeners, SCRAM users and ACLs (security.sh); its state lives in
#                       <run dir>/kafka-sasl-ssl, apart from the plaintext broker's
#   KAFKA_PORT          broker port of node 1     (default: 19092; node N of the cluster
#                       uses KAFKA_PORT+100*(N-1), each node's controller port is +1)
#   KAFKA_HEAP_OPTS     broker heap               (default: -Xms256m -Xmx512m)
#   KAFKA_JVM_OPTS      extra broker JVM options (default: -XX:TieredStopAtLevel=1, i.e. C1
#                       JIT only: on 2 cores it halves the 3-node start and is faster for
#                       test-sized loads; set it to '' for full C2 in long benchmarks)
#   KAFKA_EXTRA_CONFIG  extra server.properties lines, e.g. 'broker.session.timeout.ms=3000'
#   KAFKA_START_TIMEOUT seconds to wait for readiness (default: 60)
#   KAFKA_STOP_TIMEOUT  seconds to wait after SIGTERM before SIGKILL (default: 30)
#   JAVA                java binary               (default: $JAVA_HOME/bin/java, else java)

KAFKA_INFRA_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../common.sh source-path=SCRIPTDIR
source "$KAFKA_INFRA_DIR/../common.sh"
FLYWHEEL_REPO_DIR=$(cd "$KAFKA_INFRA_DIR/../.." && pwd)

KAFKA_VERSION=$(sed -n 's:.*<kafka\.version>[[:space:]]*\([^<[:space:]]*\)[[:space:]]*</kafka\.version>.*:\1:p' \
  "$KAFKA_INFRA_DIR/pom.xml" | head -n 1)
if [[ -z "$KAFKA_VERSION" ]]; then
  echo "kafka: cannot read <kafka.version> from $KAFKA_INFRA_DIR/pom.xml" >&2
  # shellcheck disable=SC2317 # exit only runs when executed instead of sourced
  return 1 2>/dev/null || exit 1
fi

# Absolute paths: pid checks compare them with the brokers' command lines.
kafka_abs() { if [[ $1 == /* ]]; then echo "$1"; else echo "$PWD/$1"; fi; }
KAFKA_CACHE_DIR=$(kafka_abs "${FLYWHEEL_CACHE_DIR:-$HOME/.cache/flywheel}")/kafka-$KAFKA_VERSION
KAFKA_LIBS=$KAFKA_CACHE_DIR/libs
KAFKA_SECURITY=${KAFKA_SECURITY:-plaintext}
case $KAFKA_SECURITY in
  plaintext) KAFKA_RUN_DIR=$(kafka_abs "${FLYWHEEL_RUN_DIR:-$FLYWHEEL_REPO_DIR/.run}")/kafka ;;
  sasl-ssl) KAFKA_RUN_DIR=$(kafka_abs "${FLYWHEEL_RUN_DIR:-$FLYWHEEL_REPO_DIR/.run}")/kafka-sasl-ssl ;;
  *)
    echo "kafka: KAFKA_SECURITY must be plaintext or sasl-ssl, not '$KAFKA_SECURITY'" >&2
    # shellcheck disable=SC2317 # exit only runs when executed instead of sourced
    return 1 2>/dev/null || exit 1
    ;;
esac
# shellcheck disable=SC2034 # used by security.sh and stop.sh
KAFKA_SECURITY_DIR=$KAFKA_RUN_DIR/security
KAFKA_HOST=127.0.0.1
KAFKA_PORT=${KAFKA_PORT:-19092}
KAFKA_CLUSTER_SIZE=3
KAFKA_HEAP_OPTS=${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
KAFKA_JVM_OPTS=${KAFKA_JVM_OPTS--XX:TieredStopAtLevel=1}
KAFKA_EXTRA_CONFIG=${KAFKA_EXTRA_CONFIG:-}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-60}
KAFKA_STOP_TIMEOUT=${KAFKA_STOP_TIMEOUT:-30}
if [[ -z "${JAVA:-}" ]]; then
  if [[ -n "${JAVA_HOME:-}" && -x "$JAVA_HOME/bin/java" ]]; then JAVA=$JAVA_HOME/bin/java; else JAVA=java; fi
fi

kafka_log() { echo "kafka: $*" >&2; }
kafka_die() { echo "kafka: error: $*" >&2; exit 1; }

# Layout: $KAFKA_RUN_DIR/<mode>/node-<id>/{server.properties,data/,logs/,stdout.log,kafka.pid}
# with <mode> = single | cluster; $KAFKA_RUN_DIR/mode and /bootstrap describe the last start.
kafka_mode_dir() { echo "$KAFKA_RUN_DIR/$1"; }
kafka_node_dir() { echo "$KAFKA_RUN_DIR/$1/node-$2"; }
kafka_pid_file() { echo "$KAFKA_RUN_DIR/$1/node-$2/kafka.pid"; }
kafka_node_ids() { if [[ $1 == cluster ]]; then seq 1 "$KAFKA_CLUSTER_SIZE"; else echo 1; fi; }
kafka_broker_port() { echo $((KAFKA_PORT + 100 * ($1 - 1))); }
kafka_controller_port() { echo $((KAFKA_PORT + 100 * ($1 - 1) + 1)); }
kafka_bootstrap() {
  local mode=$1 id out=""
  for id in $(kafka_node_ids "$mode"); do
    out+="${out:+,}$KAFKA_HOST:$(kafka_broker_port "$id")"
  done
  echo "$out"
}

# Prints the pid of node <mode> <id> if it runs, i.e. the pid file names a live process that
# is a Kafka broker started with this node's server.properties (guards against pid reuse).
kafka_node_pid() {
  local pid_file pid cmdline
  pid_file=$(kafka_pid_file "$1" "$2")
  [[ -s "$pid_file" ]] || return 1
  pid=$(<"$pid_file")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  [[ -r "/proc/$pid/cmdline" ]] || return 1
  cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 1
  [[ "$cmdline" == *" kafka.Kafka $(kafka_node_dir "$1" "$2")/server.properties"* ]] || return 1
  echo "$pid"
}

# True when something accepts TCP connections on 127.0.0.1:<port>.
kafka_port_open() { (exec 3<>"/dev/tcp/$KAFKA_HOST/$1") 2>/dev/null; }

# Classpath for java -cp: every jar of the cache.
kafka_classpath() { echo "$KAFKA_LIBS/*"; }

# Makes sure the jars are in the cache (fetch.sh is a no-op when they are).
kafka_ensure_libs() { "$KAFKA_INFRA_DIR/fetch.sh"; }
