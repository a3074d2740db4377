"""Reading a topic's history: its partitions, and every record from a moment up to now."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from datetime import datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import ConsumerRecord

from flywheel_common.events import header
from flywheel_common.kafka_security import kafka_client_options
from flywheel_common.settings import KafkaSettings

YIELD_EVERY = 10
"""Records handed out between two turns of the event loop. A caller that works on each
record without awaiting would otherwise hold the loop for a whole fetched batch (thousands
of records): a leader's lease renewal waits behind it, and the lease lapses."""


async def topic_partitions(settings: KafkaSettings, topic: str) -> list[TopicPartition]:
    """The topic's partitions; empty when the topic does not exist."""
    admin = AIOKafkaAdminClient(**kafka_client_options(settings))
    await admin.start()
    try:
        [description] = await admin.describe_topics([topic])
    finally:
        await admin.close()
    return [TopicPartition(topic, p["partition"]) for p in description["partitions"]]


async def records_since(
    settings: KafkaSettings, topic: str, since: datetime, batch_timeout_ms: int = 500
) -> AsyncGenerator[ConsumerRecord[bytes, bytes], None]:
    """Every committed record written at or after `since` and before the call, partition by
    partition interleaved; records produced during the scan are left for the next one. The
    event loop gets a turn every YIELD_EVERY records."""
    partitions = await topic_partitions(settings, topic)
    if not partitions:
        return
    consumer = AIOKafkaConsumer(
        **kafka_client_options(settings),
        client_id=settings.client_id or None,
        enable_auto_commit=False,
        group_id=None,
        isolation_level="read_committed",
    )
    await consumer.start()
    try:
        consumer.assign(partitions)
        ends = await consumer.end_offsets(partitions)
        starts = await consumer.offsets_for_times(
            {p: int(since.timestamp() * 1000) for p in partitions}
        )
        remaining = set()
        for partition in partitions:
            found = starts.get(partition)
            if found is not None and found.offset < ends[partition]:
                consumer.seek(partition, found.offset)
                remaining.add(partition)
        handed = 0
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=batch_timeout_ms)
            for partition, records in batches.items():
                for record in records:
                    if record.offset < ends[partition]:
                        yield record
                        handed += 1
                        if handed % YIELD_EVERY == 0:
                            await asyncio.sleep(0)
            for partition in list(remaining):
                if await consumer.position(partition) >= ends[partition]:
                    remaining.discard(partition)
    finally:
        await consumer.stop()


async def event_ids_since(settings: KafkaSettings, topic: str, since: datetime) -> set[str]:
    """The `ce_id` of every record written to the topic at or after `since`."""
    return {
        event_id
        async for record in records_since(settings, topic, since)
        if (event_id := header(record.headers, "ce_id"))
    }
