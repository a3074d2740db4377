from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings
from flywheel_common.topics import ensure_topics


@pytest.fixture(scope="session")
async def flywheel_topics(kafka_bootstrap: str) -> None:
    await ensure_topics(kafka_bootstrap)


@pytest.fixture
async def publisher(
    kafka_settings: KafkaSettings, flywheel_topics: None
) -> AsyncIterator[EventPublisher]:
    publisher = EventPublisher(kafka_settings, source="flywheel-tests")
    await publisher.start()
    yield publisher
    await publisher.stop()


async def read_topic(
    bootstrap: str, topic: str, *, at_least: int, partitions: int = 1, timeout_ms: int = 15000
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of a topic from the beginning, waiting until at least `at_least` arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        end_offsets = await consumer.end_offsets(assigned)
        records: list[ConsumerRecord[bytes, bytes]] = []
        waited = 0
        while waited < timeout_ms:
            batch = await consumer.getmany(timeout_ms=200)
            waited += 200
            for partition_records in batch.values():
                records.extend(partition_records)
            positions = [await consumer.position(p) for p in assigned]
            caught_up = all(
                position >= end_offsets[p] for p, position in zip(assigned, positions, strict=True)
            )
            if len(records) >= at_least and caught_up:
                break
        return records
    finally:
        await consumer.stop()
