"""A compacted topic read as a table: the state at start-up, then every change after it."""

import asyncio

from aiokafka import AIOKafkaProducer

from flywheel.registry.v1.events_pb2 import ModelVersionRegistered
from flywheel_common.events import PROTOBUF, Envelope
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings
from flywheel_common.table_reader import CompactedTopicReader
from flywheel_common.testing import NewTopicFactory
from flywheel_common.topics import Cleanup, TopicSpec


async def test_start_up_applies_only_the_newest_record_of_each_live_key(
    publisher: EventPublisher,
    new_topic: NewTopicFactory,
    kafka_settings: KafkaSettings,
) -> None:
    topic = TopicSpec(
        await new_topic("table", partitions=3, compact=True), 3, Cleanup.COMPACT, PROTOBUF, "model"
    )
    for version in (1, 2, 3):
        for model in ("kept", "deleted", "changed-later"):
            await publisher.publish(
                topic, ModelVersionRegistered(model=model, version=version), subject=model
            )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_settings.bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(topic.name, None, key=b"deleted")
    finally:
        await producer.stop()

    applied: list[tuple[bytes, int | None]] = []

    async def apply(key: bytes, envelope: Envelope | None) -> None:
        message = envelope.message if envelope is not None else None
        assert message is None or isinstance(message, ModelVersionRegistered)
        applied.append((key, message.version if message is not None else None))

    reader = CompactedTopicReader(kafka_settings, topic.name, apply)
    await reader.start()
    try:
        await reader.caught_up()
        assert sorted(applied) == [(b"changed-later", 3), (b"kept", 3)]

        applied.clear()
        await publisher.publish(
            topic, ModelVersionRegistered(model="changed-later", version=4), subject="changed-later"
        )
        async with asyncio.timeout(20):
            while not applied:
                await asyncio.sleep(0.05)
        assert applied == [(b"changed-later", 4)]
    finally:
        await reader.stop()
