"""Flywheel's Kafka topics, declared once, and their idempotent creation at start-up."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError, for_code
from google.protobuf.message import Message

from flywheel_common.events import JSON, PROTOBUF, OutgoingRecord, encode_event
from flywheel_common.kafka_security import kafka_client_options
from flywheel_common.settings import KafkaSettings

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
    retention_ms: int | None = None
    """How long the records of a `delete` topic are kept (Kafka's `retention.ms`; -1:
    forever); None for compacted topics, which keep the latest record of each key."""

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


DAY_MS = 24 * 60 * 60 * 1000
FACTS_RETENTION_MS = 30 * DAY_MS
"""Lifecycle events (registrations, rollouts, alerts, retrains): low volume, read back by
people and by replicas that were down."""
TRAFFIC_RETENTION_MS = 14 * DAY_MS
"""Predictions, ground truth and metrics: high volume; twice the retrain trigger's default
training window (7 days), which it reads back from flywheel.predictions."""
DLQ_RETENTION_MS = 90 * DAY_MS
"""Dead letters wait for a person to look at them."""

MODEL_EVENTS = TopicSpec(
    "flywheel.model-events", 3, Cleanup.DELETE, PROTOBUF, "model", FACTS_RETENTION_MS
)
DEPLOYMENTS = TopicSpec("flywheel.deployments", 3, Cleanup.COMPACT, PROTOBUF, "model")
DEPLOYMENT_EVENTS = TopicSpec(
    "flywheel.deployment-events", 3, Cleanup.DELETE, PROTOBUF, "model", FACTS_RETENTION_MS
)
GATEWAY_STATUS = TopicSpec("flywheel.gateway-status", 1, Cleanup.COMPACT, PROTOBUF, "gateway id")
PREDICTIONS = TopicSpec(
    "flywheel.predictions", 6, Cleanup.DELETE, PROTOBUF, "model", TRAFFIC_RETENTION_MS
)
GROUND_TRUTH = TopicSpec(
    "flywheel.ground-truth", 6, Cleanup.DELETE, PROTOBUF, "request id", TRAFFIC_RETENTION_MS
)
GROUND_TRUTH_BY_MODEL = TopicSpec(
    "flywheel.ground-truth-by-model",
    PREDICTIONS.partitions,
    Cleanup.DELETE,
    PROTOBUF,
    "model",
    TRAFFIC_RETENTION_MS,
)
"""The drift detector's own copy of ground truth, packed per model (GroundTruthBatch), keyed
like the predictions (and with as many partitions), so each label lands on the partition,
and the replica, that holds its prediction."""
MODEL_METRICS = TopicSpec(
    "flywheel.model-metrics", 3, Cleanup.DELETE, PROTOBUF, "model", TRAFFIC_RETENTION_MS
)
DRIFT_ALERTS = TopicSpec(
    "flywheel.drift-alerts", 3, Cleanup.DELETE, JSON, "model", FACTS_RETENTION_MS
)
RETRAIN_EVENTS = TopicSpec(
    "flywheel.retrain-events", 3, Cleanup.DELETE, PROTOBUF, "model", FACTS_RETENTION_MS
)
DLQ = TopicSpec("flywheel.dlq", 3, Cleanup.DELETE, PROTOBUF, "original key", DLQ_RETENTION_MS)

ALL_TOPICS = (
    MODEL_EVENTS,
    DEPLOYMENTS,
    DEPLOYMENT_EVENTS,
    GATEWAY_STATUS,
    PREDICTIONS,
    GROUND_TRUTH,
    GROUND_TRUTH_BY_MODEL,
    MODEL_METRICS,
    DRIFT_ALERTS,
    RETRAIN_EVENTS,
    DLQ,
)


def with_retention(
    specs: tuple[TopicSpec, ...], retention_ms: Mapping[str, int]
) -> tuple[TopicSpec, ...]:
    """`specs` with the retention of the topics named in `retention_ms` replaced; ValueError
    for a name that is not a `delete` topic of `specs`, or a retention below -1."""
    by_name = {spec.name: spec for spec in specs}
    for name, milliseconds in retention_ms.items():
        spec = by_name.get(name)
        if spec is None:
            raise ValueError(
                f"topic retention names {name!r}, which is not a Flywheel topic; use one of "
                f"{sorted(by_name)}"
            )
        if spec.cleanup is not Cleanup.DELETE:
            raise ValueError(
                f"{name} is compacted: it keeps each key's latest record, so a "
                "retention does not apply"
            )
        if milliseconds < -1 or milliseconds == 0:
            raise ValueError(
                f"retention of {name} must be a positive number of milliseconds or -1 "
                f"(forever), not {milliseconds}"
            )
    return tuple(
        replace(spec, retention_ms=retention_ms[spec.name]) if spec.name in retention_ms else spec
        for spec in specs
    )


def _topic_config(spec: TopicSpec, replication_factor: int) -> dict[str, str]:
    config = {"cleanup.policy": str(spec.cleanup)}
    if spec.retention_ms is not None:
        config["retention.ms"] = str(spec.retention_ms)
    if replication_factor > 1:
        config["min.insync.replicas"] = str(min(2, replication_factor))
    if spec.cleanup is Cleanup.COMPACT:
        # Routing state must converge quickly after a restart: compact eagerly.
        config["min.cleanable.dirty.ratio"] = "0.1"
        config["segment.ms"] = str(60 * 60 * 1000)
    return config


async def ensure_topics(
    settings: KafkaSettings,
    specs: tuple[TopicSpec, ...] = ALL_TOPICS,
    replication_factor: int = 1,
    timeout: float = 60.0,
    retention_ms: Mapping[str, int] | None = None,
) -> list[str]:
    """Create the topics that are missing (with the retention of `retention_ms` where it
    names one, else their own) and wait until every partition of `specs` has a leader that
    answers; returns the names created by this call. Topics that exist keep their
    configuration."""
    specs = with_retention(specs, retention_ms or {})
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [spec for spec in specs if spec.name not in existing]
        created = []
        if missing:
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
            for topic, error_code, *details in response.topic_errors:
                if error_code == 0:
                    created.append(topic)
                elif error_code != TopicAlreadyExistsError.errno:  # lost a race with a peer
                    raise KafkaTopicError(f"cannot create topic {topic}: {error_code} {details}")
            log.info("topics created", extra={"topics": created})
        # A topic created a moment ago, here or by a peer, has no acting leader yet; clients
        # that ask it for offsets meanwhile log errors, so start-up waits here instead.
        try:
            async with asyncio.timeout(timeout):
                partitions = await _led_partitions(admin, [spec.name for spec in specs])
                await _offsets_answered(settings, partitions)
        except TimeoutError:
            raise KafkaTopicError(
                f"the topics' partitions have no acting leader after {timeout:.0f}s"
            ) from None
        return created
    finally:
        await admin.close()


async def _led_partitions(admin: AIOKafkaAdminClient, topics: list[str]) -> list[TopicPartition]:
    """The topics' partitions, once the metadata names a leader for every one."""
    while True:
        described = await admin.describe_topics(topics)
        if all(
            topic["error_code"] == 0
            and topic["partitions"]
            and all(p["error_code"] == 0 and p["leader"] >= 0 for p in topic["partitions"])
            for topic in described
        ):
            return [
                TopicPartition(topic["topic"], partition["partition"])
                for topic in described
                for partition in topic["partitions"]
            ]
        await asyncio.sleep(0.1)


async def _offsets_answered(settings: KafkaSettings, partitions: list[TopicPartition]) -> None:
    """Returns once every partition's leader answers an offset request (aiokafka retries
    the ones that are not leading yet quietly here, unlike in a consumer's fetch loop)."""
    consumer = AIOKafkaConsumer(**kafka_client_options(settings), group_id=None)
    await consumer.start()
    try:
        await consumer.end_offsets(partitions)
    finally:
        await consumer.stop()


async def await_group_coordinator(
    settings: KafkaSettings, group_id: str, timeout: float = 60.0
) -> None:
    """Wait until the group's coordinator is known and has loaded the group.

    The first group on a new cluster makes the broker create `__consumer_offsets`, and its
    coordinators are unavailable for a few seconds; a consumer started meanwhile logs each
    failed lookup as an error. After `timeout` the consumer is left to keep trying itself.
    """
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        async with asyncio.timeout(timeout):
            while True:
                try:
                    await _coordinator_answers(admin, group_id)
                    return
                except KafkaError as error:
                    if not error.retriable:
                        raise
                    await asyncio.sleep(0.1)
    except TimeoutError:
        log.warning(
            "no group coordinator yet; starting anyway",
            extra={"group": group_id, "timeout_seconds": timeout},
        )
    finally:
        await admin.close()


async def _coordinator_answers(admin: AIOKafkaAdminClient, group_id: str) -> None:
    node = await admin.find_coordinator(group_id)
    [response] = await admin.describe_consumer_groups([group_id], group_coordinator_id=node)
    error_code = response.groups[0][0]
    if error_code:
        raise for_code(error_code)(f"the coordinator of {group_id} is not ready")
