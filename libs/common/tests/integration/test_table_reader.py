"""A compacted topic read as a table: the state at start-up, then every change after it."""

import asyncio
import uuid

from aiokafka import AIOKafkaProducer

from flywheel.registry.v1.events_pb2 import ModelVersionRegistered
from flywheel_common import dead_letters
from flywheel_common.dead_letters import DeadLetters
from flywheel_common.events import PROTOBUF, Envelope, header
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings
from flywheel_common.table_reader import CompactedTopicReader
from flywheel_common.topics import DLQ, Cleanup, TopicSpec
from flywheel_testing.kafka import client_options, read_topic
from flywheel_testing.plugin import NewTopicFactory


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
    producer = AIOKafkaProducer(**client_options(kafka_settings.bootstrap_servers))
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

    reader = CompactedTopicReader(
        kafka_settings, topic.name, apply, DeadLetters(publisher, "test.table-reader")
    )
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


async def test_records_it_cannot_apply_are_dead_lettered_and_the_reader_goes_on(
    publisher: EventPublisher,
    new_topic: NewTopicFactory,
    kafka_settings: KafkaSettings,
) -> None:
    topic = TopicSpec(await new_topic("table", compact=True), 1, Cleanup.COMPACT, PROTOBUF, "model")
    applied: list[str] = []

    async def apply(key: bytes, envelope: Envelope | None) -> None:
        model = key.decode()  # as every Flywheel table does: the key is a UTF-8 name
        if envelope is not None:
            applied.append(model)

    reader_name = f"test.{uuid.uuid4().hex[:8]}"
    reader = CompactedTopicReader(
        kafka_settings, topic.name, apply, DeadLetters(publisher, reader_name)
    )
    await reader.start()
    try:
        await reader.caught_up()
        producer = AIOKafkaProducer(**client_options(kafka_settings.bootstrap_servers))
        await producer.start()
        try:
            await producer.send_and_wait(topic.name, None, key=b"\xff\xfe")  # apply raises
            await producer.send_and_wait(topic.name, b"not an event", key=b"garbage")
        finally:
            await producer.stop()
        await publisher.publish(
            topic, ModelVersionRegistered(model="after", version=1), subject="after"
        )
        async with asyncio.timeout(20):
            while applied != ["after"]:
                await asyncio.sleep(0.05)
        assert reader.task is not None
        assert not reader.task.done()
    finally:
        await reader.stop()

    dead = [
        record
        for record in await read_topic(
            kafka_settings.bootstrap_servers, DLQ.name, at_least=2, partitions=DLQ.partitions
        )
        if header(record.headers, dead_letters.CONSUMER_GROUP) == reader_name
    ]
    reasons = {record.key: header(record.headers, dead_letters.REASON) or "" for record in dead}
    assert len(dead) == 2
    assert reasons[b"\xff\xfe"].startswith("cannot apply: UnicodeDecodeError")
    assert reasons[b"garbage"].startswith("undecodable:")
