"""Reading, watching and cleaning the real broker's topics from a test."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord

from flywheel_common.events import EventTypes, decode_event
from flywheel_common.kafka_security import kafka_client_options
from flywheel_common.settings import KafkaSettings
from flywheel_common.topics import TopicSpec

Kafka = KafkaSettings | str
"""The broker: its client settings, or just its address (a plaintext one)."""


def client_options(kafka: Kafka) -> dict[str, Any]:
    settings = KafkaSettings(bootstrap_servers=kafka) if isinstance(kafka, str) else kafka
    return dict(kafka_client_options(settings))


async def read_topic(
    kafka: Kafka, topic: str, *, at_least: int, partitions: int = 1, timeout_ms: int = 15000
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of a topic from the beginning, waiting until at least `at_least` arrived."""
    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False)
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


async def tombstone(kafka: Kafka, topic: str, keys: Sequence[str]) -> None:
    """Delete keys from a compacted topic, so replicas of later tests do not act on them."""
    if not keys:
        return
    producer = AIOKafkaProducer(**client_options(kafka))
    await producer.start()
    try:
        if topic not in (await producer.client.fetch_all_metadata()).topics():
            return  # never created (a fresh broker): nothing to forget
        for key in keys:
            await producer.send_and_wait(topic, None, key=key.encode())
    finally:
        await producer.stop()


@contextlib.asynccontextmanager
async def collected_events(kafka: Kafka, topic: TopicSpec, key: str) -> AsyncIterator[list[Any]]:
    """The messages published on `topic` under `key` from the moment this is entered, decoded,
    in arrival order and once each (delivery is at least once: duplicates share a ce_id)."""
    consumer = AIOKafkaConsumer(**client_options(kafka), enable_auto_commit=False)
    await consumer.start()
    partitions = [TopicPartition(topic.name, p) for p in range(topic.partitions)]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    for partition in partitions:
        await consumer.position(partition)  # fixes the start before the test acts
    events: list[Any] = []
    collector = asyncio.create_task(_collect(consumer, key.encode(), events))
    try:
        yield events
    finally:
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector
        await consumer.stop()


async def _collect(consumer: AIOKafkaConsumer, key: bytes, sink: list[Any]) -> None:
    types = EventTypes.flywheel()
    seen: set[str] = set()
    while True:
        for records in (await consumer.getmany(timeout_ms=200)).values():
            for record in records:
                if record.key != key:
                    continue
                envelope = decode_event(record.headers, record.value, types)
                if envelope.id not in seen:
                    seen.add(envelope.id)
                    sink.append(envelope.message)
