"""Benchmark: the drift detector as 1 and as 2 replicas over 4 partitions, and how long the
stream stops when a replica dies or joins.

    make bench-drift-replicas      # starts Kafka and PostgreSQL if needed
    uv run python bench/drift_replicas.py --logs 600000

A backlog of prediction logs (30 features, packed 200 per record as the gateway packs them)
for four models, one per partition, is published first. Replicas are processes of their
own (this file, `worker`), each running the detector's faust stream with the service's
settings on one PostgreSQL database; progress is read from their checkpoints (the offsets
applied per partition), polled every 20 ms.

- Throughput: logs per second from the moment every replica holds partitions until the
  backlog is applied, 2 replicas beside 1 (on a 2-core machine the ceiling is 2x).
- Death: with 2 replicas at work, one is killed with SIGKILL; the pause is how long its
  partitions make no progress, beside the group's session timeout (10 s), after which
  Kafka hands them on: the hand-over's own cost is the difference.
- Join: a second replica joins one at work; the pause is the longest stall of any
  partition, beside the longest stall of a bare aiokafka consumer on the same topic when a
  second bare consumer joins its group (Kafka's own rebalance, the reference).
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
import uuid
from dataclasses import replace

import numpy as np
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.partitioner import murmur2
from drift import FEATURES, WINDOW, Topics, fresh_topics, prediction
from sqlalchemy import select

from flywheel_common.db import Database
from flywheel_common.migrations import upgrade
from flywheel_common.outbox import Outbox
from flywheel_common.prediction_logs import pack
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings
from flywheel_common.topics import PROTOBUF, Cleanup, TopicSpec
from flywheel_drift import storage
from flywheel_drift.app import MIGRATIONS, tune_garbage_collection
from flywheel_drift.domain import ModelMonitor
from flywheel_drift.handlers import Detector
from flywheel_drift.profiles import ReferenceProfile, build_profile
from flywheel_drift.settings import DriftSettings
from flywheel_drift.stream import DriftStream
from flywheel_drift.windows import WindowPolicy
from flywheel_testing.backends import kafka_address, postgres_url, reset_postgres
from flywheel_testing.kafka import client_options

PARTITIONS = 4
SESSION_TIMEOUT = 10.0  # the stream's broker_session_timeout
POLL = 0.02


def models() -> list[str]:
    """One model per partition (the default key partitioner)."""
    found: dict[int, str] = {}
    index = 0
    while len(found) < PARTITIONS:
        name = f"bench-{index}"
        found.setdefault((murmur2(name.encode()) & 0x7FFFFFFF) % PARTITIONS, name)
        index += 1
    return [found[p] for p in sorted(found)]


def topics_named(predictions: str, labels: str, labels_by_model: str) -> Topics:
    return Topics(
        TopicSpec(predictions, PARTITIONS, Cleanup.DELETE, PROTOBUF, "model"),
        TopicSpec(labels, PARTITIONS, Cleanup.DELETE, PROTOBUF, "request id"),
        TopicSpec(labels_by_model, PARTITIONS, Cleanup.DELETE, PROTOBUF, "model"),
    )


async def fill(bootstrap: str, logs: int) -> tuple[Topics, int]:
    """Fresh topics with `logs` prediction logs; returns them and their record count."""
    topics = await fresh_topics(bootstrap, PARTITIONS)
    names = models()
    publisher = EventPublisher(KafkaSettings(bootstrap_servers=bootstrap, linger_ms=20), "bench")
    await publisher.start()
    rows = np.random.default_rng(0).normal(size=(logs, FEATURES)).astype(np.float32)
    records = 0
    for start in range(0, logs, 8000):
        batch = [
            prediction(names[i % PARTITIONS], rows[i], i)
            for i in range(start, min(start + 8000, logs))
        ]
        packed = [
            replace(record, topic=topics.predictions.name)
            for record, _ in pack(batch, source="bench")
        ]
        await publisher.send(packed)
        records += len(packed)
    await publisher.stop()
    return topics, records


# --- a replica -------------------------------------------------------------------------


async def worker(group: str, url: str, replica: str, *topic_names: str) -> None:
    """One drift replica over the benchmark's topics, until killed."""
    bootstrap = kafka_address()
    reference = np.random.default_rng(1).normal(size=(5000, FEATURES)).astype(np.float32)
    profiles = {m: build_profile(m, 1, reference) for m in models()}

    async def profile(model: str, version: int) -> ReferenceProfile | None:
        return profiles[model]

    def new_detector() -> Detector:
        return Detector(profile, lambda _: ModelMonitor(window=WindowPolicy(size=WINDOW)))

    tune_garbage_collection(DriftSettings().gc_first_generation)
    kafka = KafkaSettings(bootstrap_servers=bootstrap)
    publisher = EventPublisher(kafka, "bench")
    await publisher.start()
    database = Database(url)
    topics = topics_named(*topic_names)
    stream = DriftStream(
        kafka,
        group,
        new_detector,
        publisher,
        database,
        Outbox(source="bench"),  # staged, not relayed: the benchmark reads the checkpoints
        replica=replica,
        batch_size=WINDOW,
        prediction_batch_size=DriftSettings().prediction_batch_records,
        predictions_topic=topics.predictions,
        labels_topic=topics.labels,
        labels_by_model_topic=topics.labels_by_model,
        start_from="earliest",
    )
    await stream.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


# --- the benchmark's side ----------------------------------------------------------------


class Replicas:
    """Worker processes of one consumer group on one database."""

    def __init__(self, topics: Topics, url: str) -> None:
        self.topics = topics
        self.group = f"bench-replicas-{uuid.uuid4().hex[:6]}"
        self.url = url
        self.processes: list[asyncio.subprocess.Process] = []

    async def start(self) -> asyncio.subprocess.Process:
        name = f"replica-{len(self.processes)}"
        process = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "worker", self.group, self.url, name,
            *(spec.name for spec in self.topics),
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self.processes.append(process)
        return process

    async def ready(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        await asyncio.wait_for(process.stdout.readline(), 120)

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def applied(database: Database, topic: str) -> dict[int, int]:
    """Records applied per partition (from the checkpoints)."""
    async with database.transaction() as session:
        rows = await session.execute(
            select(storage.OffsetRow.partition, storage.OffsetRow.offset).where(
                storage.OffsetRow.topic == topic
            )
        )
        return {partition: offset + 1 for partition, offset in rows}


async def owners(database: Database) -> dict[int, str]:
    async with database.transaction() as session:
        rows = await session.execute(
            select(storage.PartitionOwnerRow.partition, storage.PartitionOwnerRow.owner)
        )
        return {partition: owner for partition, owner in rows}


async def fresh_database(url: str) -> Database:
    await reset_postgres(url)
    database = Database(url)
    await upgrade(database, MIGRATIONS)
    return database


async def throughput(topics: Topics, records: int, logs: int, url: str, count: int) -> float:
    """Logs per second of `count` replicas, from when all hold partitions to the end."""
    database = await fresh_database(url)
    replicas = Replicas(topics, url)
    try:
        for _ in range(count):
            await replicas.start()
        while len(set((await owners(database)).values())) < count:
            await asyncio.sleep(POLL)
        started, at_start = (
            time.perf_counter(),
            sum((await applied(database, topics.predictions.name)).values()),
        )
        while (done := sum((await applied(database, topics.predictions.name)).values())) < records:
            await asyncio.sleep(POLL)
        elapsed = time.perf_counter() - started
        return (done - at_start) / records * logs / elapsed
    finally:
        await replicas.stop()
        await database.stop()


async def end_offsets(bootstrap: str, topic: str) -> dict[int, int]:
    consumer = AIOKafkaConsumer(**client_options(bootstrap))
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
    finally:
        await consumer.stop()
    return {tp.partition: offset for tp, offset in ends.items()}


async def stalls(database: Database, topic: str, ends: dict[int, int], seconds: float) -> float:
    """The longest time any partition with records left made no progress, over `seconds`."""
    last: dict[int, tuple[int, float]] = {}
    longest = 0.0
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        now = time.perf_counter()
        for partition, offset in (await applied(database, topic)).items():
            seen = last.get(partition)
            if seen is None or offset != seen[0]:
                last[partition] = (offset, now)
            if offset < ends[partition]:
                longest = max(longest, now - last[partition][1])
        await asyncio.sleep(POLL)
    return longest


async def pause_on_death(topics: Topics, url: str) -> float:
    database = await fresh_database(url)
    replicas = Replicas(topics, url)
    try:
        first, second = await replicas.start(), await replicas.start()
        await replicas.ready(first)
        await replicas.ready(second)
        while len(set((await owners(database)).values())) < 2:
            await asyncio.sleep(POLL)
        await asyncio.sleep(1.0)  # both at work
        held = {p for p, owner in (await owners(database)).items() if owner == "replica-0"}
        first.send_signal(signal.SIGKILL)
        killed = time.perf_counter()
        last = await applied(database, topics.predictions.name)
        moved: dict[int, float] = {}
        async with asyncio.timeout(60):
            while len(moved) < len(held):
                now = await applied(database, topics.predictions.name)
                for p in held:
                    if p not in moved and now.get(p, 0) > last.get(p, 0):
                        moved[p] = time.perf_counter() - killed
                await asyncio.sleep(POLL)
        return max(moved.values())
    finally:
        await replicas.stop()
        await database.stop()


async def pause_on_join(topics: Topics, url: str) -> float:
    database = await fresh_database(url)
    replicas = Replicas(topics, url)
    try:
        await replicas.ready(await replicas.start())
        ends = await end_offsets(kafka_address(), topics.predictions.name)
        await asyncio.sleep(1.0)
        # From just before the second replica starts until well after it has joined.
        measuring = asyncio.create_task(stalls(database, topics.predictions.name, ends, 15.0))
        await replicas.start()
        return await measuring
    finally:
        await replicas.stop()
        await database.stop()


async def bare_pause_on_join(bootstrap: str, topic: str) -> float:
    """The longest time any partition makes no progress when a second bare aiokafka
    consumer joins the group of one at work (progress by either consumer counts)."""
    group = f"bench-bare-{uuid.uuid4().hex[:6]}"
    ends = await end_offsets(bootstrap, topic)
    last: dict[int, float] = {}
    longest = 0.0

    async def consume(consumer: AIOKafkaConsumer, until: float) -> None:
        nonlocal longest
        await consumer.start()
        try:
            while time.perf_counter() < until:
                batch = await consumer.getmany(timeout_ms=20, max_records=1)
                now = time.perf_counter()
                for tp, records in batch.items():
                    if records and records[-1].offset + 1 < ends[tp.partition]:
                        longest = max(longest, now - last.get(tp.partition, now))
                        last[tp.partition] = now
                await asyncio.sleep(0.015)  # about the detector's records per second
        finally:
            await consumer.stop()

    def consumer() -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            topic, **client_options(bootstrap), group_id=group, auto_offset_reset="earliest",
            session_timeout_ms=int(SESSION_TIMEOUT * 1000), heartbeat_interval_ms=2000,
        )  # fmt: skip

    until = time.perf_counter() + 12.0
    first = asyncio.create_task(consume(consumer(), until))
    while len(last) < PARTITIONS:  # the first is at work on every partition
        await asyncio.sleep(POLL)
    longest = 0.0
    second = asyncio.create_task(consume(consumer(), until))
    await asyncio.gather(first, second)
    return longest


async def main(logs: int) -> None:
    bootstrap, url = kafka_address(), postgres_url()
    topics, records = await fill(bootstrap, logs)
    print(f"{logs:,} logs in {records:,} records over {PARTITIONS} partitions", flush=True)
    one = await throughput(topics, records, logs, url, 1)
    two = await throughput(topics, records, logs, url, 2)
    death = await pause_on_death(topics, url)
    join = await pause_on_join(topics, url)
    bare = await bare_pause_on_join(bootstrap, topics.predictions.name)
    print()
    rows = [
        ("logs/s, 2 replicas vs 1", f"{two:,.0f}", f"{one:,.0f}", two / one),
        ("pause when a replica dies (s) vs session timeout", f"{death:.2f}",
         f"{SESSION_TIMEOUT:.2f}", death / SESSION_TIMEOUT),
        ("longest stall when a replica joins (s) vs bare aiokafka", f"{join:.2f}",
         f"{bare:.2f}", join / bare),
    ]  # fmt: skip
    print("| measure | drift detector | reference | ratio |")
    print("| --- | --- | --- | --- |")
    for name, measured, reference, ratio in rows:
        print(f"| {name} | {measured} | {reference} | {ratio:.2f}x |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        asyncio.run(worker(*sys.argv[2:]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
        parser.add_argument("--logs", type=int, default=600_000)
        asyncio.run(main(parser.parse_args().logs))
