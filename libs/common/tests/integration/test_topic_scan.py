"""Reading a topic's history lets the process's other tasks run (a lease's renewal, say),
however long the reader works on each record."""

from __future__ import annotations

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer

from flywheel_common.settings import KafkaSettings
from flywheel_common.topic_scan import YIELD_EVERY, records_since
from flywheel_testing.kafka import client_options
from flywheel_testing.plugin import NewTopicFactory

RECORDS = 200


def work_on(record: object) -> None:
    """Synchronous work on a record, as decoding it is."""
    time.sleep(0.001)


async def test_a_reader_busy_with_each_record_leaves_the_event_loop_turns(
    new_topic: NewTopicFactory, kafka_bootstrap: str
) -> None:
    topic = await new_topic("scan")
    producer = AIOKafkaProducer(**client_options(kafka_bootstrap))
    await producer.start()
    try:
        for index in range(RECORDS):
            await producer.send(topic, f"record-{index}".encode())
        await producer.flush()
    finally:
        await producer.stop()

    read = 0
    seen: list[int] = []  # how many records were read each time the other task ran

    async def other_task() -> None:
        while True:
            seen.append(read)
            await asyncio.sleep(0)

    watching = asyncio.create_task(other_task())
    since = datetime.now(UTC) - timedelta(minutes=5)
    settings = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    async for record in records_since(settings, topic, since):
        work_on(record)
        read += 1
    watching.cancel()

    assert read == RECORDS
    turns = sorted(set(seen))
    assert max(b - a for a, b in itertools.pairwise(turns)) <= YIELD_EVERY, turns
