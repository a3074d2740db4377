import asyncio
import logging
import uuid
from dataclasses import replace

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from flywheel_common.events import PROTOBUF
from flywheel_common.settings import KafkaSettings
from flywheel_common.topics import (
    ALL_TOPICS,
    DEPLOYMENTS,
    DLQ,
    GATEWAY_STATUS,
    PREDICTIONS,
    Cleanup,
    TopicSpec,
    await_group_coordinator,
    ensure_topics,
)
from flywheel_testing.kafka import client_options


async def test_every_topic_exists_with_its_cleanup_policy(
    kafka_bootstrap: str, kafka_settings: KafkaSettings
) -> None:
    await ensure_topics(kafka_settings)
    assert await ensure_topics(kafka_settings) == []  # idempotent

    admin = AIOKafkaAdminClient(**client_options(kafka_bootstrap))
    await admin.start()
    try:
        names = set(await admin.list_topics())
        assert {spec.name for spec in ALL_TOPICS} <= names
        [described] = await admin.describe_topics([PREDICTIONS.name])
        assert len(described["partitions"]) == PREDICTIONS.partitions
    finally:
        await admin.close()
    configs = await topic_configs(kafka_bootstrap, [spec.name for spec in ALL_TOPICS])
    assert configs[DEPLOYMENTS.name]["cleanup.policy"] == "compact"
    assert configs[GATEWAY_STATUS.name]["cleanup.policy"] == "compact"
    assert configs[PREDICTIONS.name]["cleanup.policy"] == "delete"


async def topic_configs(kafka_bootstrap: str, topics: list[str]) -> dict[str, dict[str, str]]:
    """Each topic's configuration as the broker describes it."""
    admin = AIOKafkaAdminClient(**client_options(kafka_bootstrap))
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic) for topic in topics]
        )
    finally:
        await admin.close()
    return {
        resource[3]: {entry[0]: entry[1] for entry in resource[4]}
        for response in responses
        for resource in response.resources
    }


async def test_topics_are_created_with_their_retention_or_the_one_configured(
    kafka_bootstrap: str, kafka_settings: KafkaSettings
) -> None:
    # Copies under new names: a broker kept from an earlier run has the topics already, and
    # a topic that exists keeps its configuration.
    suffix = uuid.uuid4().hex[:10]
    predictions, dlq, deployments, configured = (
        replace(spec, name=f"{spec.name}.{suffix}", partitions=1)
        for spec in (PREDICTIONS, DLQ, DEPLOYMENTS, PREDICTIONS)
    )
    configured = replace(configured, name=f"{configured.name}.configured")
    specs = (predictions, dlq, deployments, configured)
    try:
        await ensure_topics(kafka_settings, specs, retention_ms={configured.name: 3_600_000})
        configs = await topic_configs(kafka_bootstrap, [spec.name for spec in specs])
    finally:
        admin = AIOKafkaAdminClient(**client_options(kafka_bootstrap))
        await admin.start()
        await admin.delete_topics([spec.name for spec in specs])
        await admin.close()
    day_ms = 24 * 3600 * 1000
    assert configs[predictions.name]["retention.ms"] == str(14 * day_ms)
    assert configs[dlq.name]["retention.ms"] == str(90 * day_ms)
    assert configs[configured.name]["retention.ms"] == "3600000"
    assert configs[deployments.name]["cleanup.policy"] == "compact"


async def test_new_topics_answer_consumers_without_errors_once_ensured(
    kafka_bootstrap: str, kafka_settings: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    # Right after creation a partition has no acting leader for a moment; a consumer asking
    # then logs "Failed fetch offsets ... NotLeaderForPartitionError" at ERROR.
    spec = TopicSpec(f"test.fresh.{uuid.uuid4().hex[:10]}", 6, Cleanup.DELETE, PROTOBUF, "k")
    caplog.set_level(logging.WARNING, logger="aiokafka")
    try:
        assert await ensure_topics(kafka_settings, (spec,)) == [spec.name]
        consumer = AIOKafkaConsumer(**client_options(kafka_bootstrap), group_id=None)
        await consumer.start()
        try:
            partitions = [TopicPartition(spec.name, p) for p in range(spec.partitions)]
            consumer.assign(partitions)
            await consumer.seek_to_beginning(*partitions)
            assert [await consumer.position(p) for p in partitions] == [0] * spec.partitions
        finally:
            await consumer.stop()
    finally:
        admin = AIOKafkaAdminClient(**client_options(kafka_bootstrap))
        await admin.start()
        await admin.delete_topics([spec.name])
        await admin.close()
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_waiting_for_the_coordinator_of_a_new_group_costs_nothing(
    kafka_settings: KafkaSettings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with asyncio.timeout(10):
        await await_group_coordinator(kafka_settings, f"test-group-{uuid.uuid4().hex[:8]}")
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
