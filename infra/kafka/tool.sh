#!/usr/bin/env bash
# Runs a Kafka command-line tool from the cached jars (fetching them if needed), e.g.
#   tool.sh topics --bootstrap-server 127.0.0.1:19092 --create --topic t --partitions 3
# Tools: topics, console-producer, console-consumer, consumer-groups, configs, acls,
# metadata-quorum, broker-api-versions, get-offsets, cluster, storage, or a class name.
# On the SASL_SSL broker (start.sh --sasl-ssl) add
#   --command-config .run/kafka-sasl-ssl/security/admin.properties
# (--consumer.config / --producer.config for the console tools) to act as the super user.
set -euo pipefail
# shellcheck source=lib.sh source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

(($#)) || kafka_die "usage: tool.sh TOOL [ARGS...] (see the header of $0)"
tool=$1
shift
case $tool in
  topics) class=org.apache.kafka.tools.TopicCommand ;;
  console-producer) class=org.apache.kafka.tools.ConsoleProducer ;;
  console-consumer) class=org.apache.kafka.tools.consumer.ConsoleConsumer ;;
  consumer-groups) class=org.apache.kafka.tools.consumer.group.ConsumerGroupCommand ;;
  configs) class=kafka.admin.ConfigCommand ;;
  acls) class=org.apache.kafka.tools.AclCommand ;;
  metadata-quorum) class=org.apache.kafka.tools.MetadataQuorumCommand ;;
  broker-api-versions) class=org.apache.kafka.tools.BrokerApiVersionsCommand ;;
  get-offsets) class=org.apache.kafka.tools.GetOffsetShell ;;
  cluster) class=org.apache.kafka.tools.ClusterTool ;;
  storage) class=kafka.tools.StorageTool ;;
  *.*) class=$tool ;;
  *) kafka_die "unknown tool: $tool" ;;
esac
kafka_ensure_libs
exec "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
  -Dlog4j2.configurationFile="$KAFKA_INFRA_DIR/tools-log4j2.properties" \
  -cp "$(kafka_classpath)" "$class" "$@"
