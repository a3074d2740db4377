"""Flywheel's Kafka topics, declared once, and their idempotent creation at start-up."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from google.protobuf.message import Message

from flywheel_common.events import JSON, PROTOBUF, OutgoingRecord, encode_event

log = logging.getLogger(__name__)


class KafkaTopicError(RuntimeError):
    """The broker refused to create a topic."""


class Cleanup(StrEnum):
    DELETE = "delete"
    COMPACT = "compact"


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    cleanup: Cleanup
    content_type: str
    key: str
    """What the Kafka key holds."""

    def record(
        self, message: Message, *, source: str, subject: str | None, key: str | bytes | None = None
    ) -> OutgoingRecord:
        """Encode a message as a CloudEvent for this topic, in the topic's content type."""
        return encode_event(
            self.name,
            message,
            source=source,
            subject=subject,
            key=key,
            content_type=self.content_type,
        )


MODEL_EVENTS = TopicSpec("flywheel.model-events", 3, Cleanup.DELETE, PROTOBUF, "model")
DEPLOYMENTS = TopicSpec("flywheel.deployments", 3, Cleanup.COMPACT, PROTOBUF, "model")
DEPLOYMENT_EVENTS = TopicSpec("flywheel.deployment-events", 3, Cleanup.DELETE, PROTOBUF, "model")
GATEWAY_STATUS = TopicSpec("flywheel.gateway-status", 1, Cleanup.COMPACT, PROTOBUF, "gateway id")
PREDICTIONS = TopicSpec("flywheel.predictions", 6, Cleanup.DELETE, PROTOBUF, "model")
GROUND_TRUTH = TopicSpec("flywheel.ground-truth", 6, Cleanup.DELETE, PROTOBUF, "request id")
MODEL_METRICS = TopicSpec("flywheel.model-metrics", 3, Cleanup.DELETE, PROTOBUF, "model")
DRIFT_ALERTS = TopicSpec("flywheel.drift-alerts", 3, Cleanup.DELETE, JSON, "model")
RETRAIN_EVENTS = TopicSpec("flywheel.retrain-events", 3, Cleanup.DELETE, PROTOBUF, "model")
DLQ = TopicSpec("flywheel.dlq", 3, Cleanup.DELETE, PROTOBUF, "original key")

ALL_TOPICS = (
    MODEL_EVENTS,
    DEPLOYMENTS,
    DEPLOYMENT_EVENTS,
    GATEWAY_STATUS,
    PREDICTIONS,
    GROUND_TRUTH,
    MODEL_METRICS,
    DRIFT_ALERTS,
    RETRAIN_EVENTS,
    DLQ,
)


def _topic_config(spec: TopicSpec, replication_factor: int) -> dict[str, str]:
    config = {"cleanup.policy": str(spec.cleanup)}
    if replication_factor > 1:
        config["min.insync.replicas"] = str(min(2, replication_factor))
    if spec.cleanup is Cleanup.COMPACT:
        # Routing state must converge quickly after a restart: compact eagerly.
        config["min.cleanable.dirty.ratio"] = "0.1"
        config["segment.ms"] = str(60 * 60 * 1000)
    return config


async def ensure_topics(
    bootstrap_servers: str,
    specs: tuple[TopicSpec, ...] = ALL_TOPICS,
    replication_factor: int = 1,
) -> list[str]:
    """Create the topics that are missing; returns the names created by this call."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        if not missing:
            return []
        new_topics = [
            NewTopic(
                name=spec.name,
                num_partitions=spec.partitions,
                replication_factor=replication_factor,
                topic_configs=_topic_config(spec, replication_factor),
            )
            for spec in missing
        ]
        response = await admin.create_topics(new_topics)
        created = []
        for topic, error_code, *details in response.topic_errors:
            if error_code == 0:
                created.append(topic)
            elif error_code != TopicAlreadyExistsError.errno:  # lost a race with a peer
                raise KafkaTopicError(f"cannot create topic {topic}: {error_code} {details}")
        log.info("topics created", extra={"topics": created})
        return created
    finally:
        await admin.close()
