import asyncio
import logging
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from flywheel_common.events import PROTOBUF
from flywheel_common.settings import KafkaSettings
from flywheel_common.topics import (
    ALL_TOPICS,
    DEPLOYMENTS,
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
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, spec.name) for spec in ALL_TOPICS]
        )
        policies = {
            resource[3]: {entry[0]: entry[1] for entry in resource[4]}["cleanup.policy"]
            for response in responses
            for resource in response.resources
        }
    finally:
        await admin.close()
    assert policies[DEPLOYMENTS.name] == "compact"
    assert policies[GATEWAY_STATUS.name] == "compact"
    assert policies[PREDICTIONS.name] == "delete"


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
