"""Benchmark: Flywheel's EventPublisher + EventConsumer against bare aiokafka, same run.

Both sides use the same broker, producer settings (idempotent, acks=all, the publisher's
compression, same linger) and the same payload (a PredictionLog protobuf); the bare side
skips the CloudEvent envelope, tracing (recorded by an SDK tracer provider, as in a
service), retries and dead-letter handling, but commits after each batch like the consumer
loop.

    make bench-kafka      # starts Kafka if needed
    uv run python bench/kafka_bus.py --messages 20000 --rate 2000

Prints publish-to-consume latency p50/p99 at a fixed send rate, and throughput of a burst.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from flywheel.common.v1.types_pb2 import Tensor
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.consumer import EventConsumer
from flywheel_common.events import Envelope
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings, TelemetrySettings
from flywheel_common.telemetry import configure_telemetry
from flywheel_common.topics import DLQ, Cleanup, TopicSpec, ensure_topics
from flywheel_testing.kafka import client_options

LINGER_MS = 5


def prediction(index: int) -> PredictionLog:
    """A realistic small prediction log: 4 float features in, 3 class scores out."""
    return PredictionLog(
        request_id=f"req-{index}",
        model="iris",
        version=3,
        inputs=[Tensor(name="x", datatype="FP32", shape=[1, 4], data=bytes(16))],
        outputs=[Tensor(name="p", datatype="FP32", shape=[1, 3], data=bytes(12))],
    )


@dataclass
class Result:
    latencies_ms: list[float]
    throughput_per_s: float

    def quantile(self, q: float) -> float:
        return statistics.quantiles(self.latencies_ms, n=100)[int(q * 100) - 1]


Send = Callable[[int], Awaitable[None]]


async def run_side(
    start_consumer: Callable[[Callable[[int], None]], Awaitable[Callable[[], Awaitable[None]]]],
    send_one: Send,
    send_burst: Callable[[int, int], Awaitable[None]],
    messages: int,
    rate: int,
) -> Result:
    sent_at: dict[int, float] = {}
    latencies: list[float] = []
    received = 0
    done = asyncio.Event()
    expected = messages * 2

    def on_receive(index: int) -> None:
        nonlocal received
        now = time.perf_counter()
        if index in sent_at:
            latencies.append((now - sent_at.pop(index)) * 1000)
        received += 1
        if received >= expected:
            done.set()

    stop_consumer = await start_consumer(on_receive)
    in_flight: set[asyncio.Future[None]] = set()
    # Phase 1: latency at a steady rate, one publish at a time (what a service does).
    interval = 1 / rate
    started = time.perf_counter()
    for index in range(messages):
        target = started + index * interval
        delay = target - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        sent_at[index] = time.perf_counter()
        in_flight.add(asyncio.ensure_future(send_one(index)))
    # Phase 2: throughput of a burst, publish to last consume.
    await asyncio.gather(*in_flight)
    while received < messages:
        await asyncio.sleep(0.01)
    burst_started = time.perf_counter()
    await send_burst(messages, messages)
    await asyncio.wait_for(done.wait(), 120)
    throughput = messages / (time.perf_counter() - burst_started)
    await stop_consumer()
    return Result(latencies, throughput)


async def flywheel_side(bootstrap: str, topic: str, messages: int, rate: int) -> Result:
    settings = KafkaSettings(bootstrap_servers=bootstrap, linger_ms=LINGER_MS)
    publisher = EventPublisher(settings, source="bench")
    await publisher.start()
    spec = TopicSpec(topic, 1, Cleanup.DELETE, "application/protobuf", "model")

    async def start_consumer(on_receive: Callable[[int], None]) -> Callable[[], Awaitable[None]]:
        async def handle(envelope: Envelope) -> None:
            assert isinstance(envelope.message, PredictionLog)
            on_receive(int(envelope.message.request_id[4:]))

        consumer = EventConsumer(
            settings,
            group_id=f"bench-{uuid.uuid4().hex[:8]}",
            topics=[topic],
            handler=handle,
            dead_letters=publisher,
        )
        await consumer.start()
        return consumer.stop

    async def send_one(index: int) -> None:
        await publisher.publish(spec, prediction(index), subject="iris")

    async def send_burst(first: int, count: int) -> None:
        await publisher.publish_many(
            spec, [(prediction(i), "iris") for i in range(first, first + count)]
        )

    try:
        return await run_side(start_consumer, send_one, send_burst, messages, rate)
    finally:
        await publisher.stop()


async def bare_side(bootstrap: str, topic: str, messages: int, rate: int) -> Result:
    producer = AIOKafkaProducer(
        **client_options(bootstrap),
        enable_idempotence=True,
        acks="all",
        compression_type=KafkaSettings().compression,
        linger_ms=LINGER_MS,
        max_batch_size=256 * 1024,
    )
    await producer.start()

    async def start_consumer(on_receive: Callable[[int], None]) -> Callable[[], Awaitable[None]]:
        consumer = AIOKafkaConsumer(
            topic,
            **client_options(bootstrap),
            group_id=f"bench-{uuid.uuid4().hex[:8]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        stopping = asyncio.Event()

        async def loop() -> None:
            while not stopping.is_set():
                batches = await consumer.getmany(timeout_ms=200, max_records=500)
                for partition, records in batches.items():
                    for record in records:
                        log = PredictionLog.FromString(record.value)
                        on_receive(int(log.request_id[4:]))
                    await consumer.commit({partition: records[-1].offset + 1})

        task = asyncio.create_task(loop())

        async def stop() -> None:
            stopping.set()
            await task
            await consumer.stop()

        return stop

    async def send_one(index: int) -> None:
        await producer.send_and_wait(topic, prediction(index).SerializeToString(), key=b"iris")

    async def send_burst(first: int, count: int) -> None:
        futures = [
            await producer.send(topic, prediction(i).SerializeToString(), key=b"iris")
            for i in range(first, first + count)
        ]
        await asyncio.gather(*futures)

    try:
        return await run_side(start_consumer, send_one, send_burst, messages, rate)
    finally:
        await producer.stop()


async def create_topic(bootstrap: str) -> str:
    name = f"bench.kafka-bus.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(**client_options(bootstrap))
    await admin.start()
    await admin.create_topics([NewTopic(name, 1, 1)])
    await admin.close()
    return name


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--messages", type=int, default=10000, help="per phase and side")
    parser.add_argument("--rate", type=int, default=1000, help="messages/s in the latency phase")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds per side")
    args = parser.parse_args()
    # As in a service: an SDK tracer provider records every span (export is off by default).
    configure_telemetry("bench", "bench", TelemetrySettings())
    await ensure_topics(KafkaSettings(bootstrap_servers=args.bootstrap), (DLQ,))

    results: dict[str, list[Result]] = {"flywheel": [], "bare aiokafka": []}
    for _ in range(args.rounds):  # alternate so machine noise hits both sides alike
        for name, side in (("bare aiokafka", bare_side), ("flywheel", flywheel_side)):
            topic = await create_topic(args.bootstrap)
            results[name].append(await side(args.bootstrap, topic, args.messages, args.rate))

    def median(name: str, pick: Callable[[Result], float]) -> float:
        return statistics.median(pick(r) for r in results[name])

    rows = [
        ("latency p50 (ms)", lambda r: r.quantile(0.50)),
        ("latency p99 (ms)", lambda r: r.quantile(0.99)),
        ("throughput (msg/s)", lambda r: r.throughput_per_s),
    ]
    print(
        f"\nkafka bus: {args.messages} messages per phase, latency at {args.rate}/s, "
        f"median of {args.rounds} rounds"
    )
    print(f"{'metric':<22}{'flywheel':>12}{'bare aiokafka':>16}{'ratio':>9}")
    for label, pick in rows:
        ours, bare = median("flywheel", pick), median("bare aiokafka", pick)
        print(f"{label:<22}{ours:>12.2f}{bare:>16.2f}{ours / bare:>9.2f}")


if __name__ == "__main__":
    asyncio.run(main())
