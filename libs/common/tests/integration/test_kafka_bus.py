"""The shared publisher and consumer loop against the real broker."""

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flywheel.drift.v1.events_pb2 import DriftAlert
from flywheel.registry.v1.events_pb2 import ModelVersionRegistered
from flywheel_common import dead_letters
from flywheel_common.consumer import EventConsumer, RetryPolicy
from flywheel_common.events import JSON, PROTOBUF, Envelope, EventTypes, decode_event, header
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings
from flywheel_common.topics import DLQ, Cleanup, TopicSpec
from flywheel_testing.kafka import client_options, read_topic
from flywheel_testing.plugin import NewTopicFactory

FAST_RETRIES = RetryPolicy(attempts=3, initial_backoff_seconds=0.01, max_backoff_seconds=0.05)


def spec(name: str, content_type: str = PROTOBUF) -> TopicSpec:
    return TopicSpec(name, 1, Cleanup.DELETE, content_type, "model")


async def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def test_cloudevent_round_trips_with_every_header(
    publisher: EventPublisher,
    new_topic: NewTopicFactory,
    kafka_bootstrap: str,
    span_exporter: InMemorySpanExporter,
) -> None:
    topic = spec(await new_topic("roundtrip"))
    before = datetime.now(UTC)
    with trace.get_tracer("tests").start_as_current_span("register") as span:
        sent = await publisher.publish(
            topic, ModelVersionRegistered(model="iris", version=1), subject="iris"
        )
    [record] = await read_topic(kafka_bootstrap, topic.name, at_least=1)
    headers = record.headers
    assert record.key == b"iris"
    assert header(headers, "ce_specversion") == "1.0"
    assert header(headers, "traceparent")

    event = decode_event(headers, record.value, EventTypes.flywheel(), key=record.key)
    assert event.id == sent.event_id
    assert event.source == "flywheel-tests"
    assert event.type == "flywheel.registry.v1.ModelVersionRegistered"
    assert event.subject == "iris"
    assert event.content_type == PROTOBUF
    assert event.time is not None
    assert before - timedelta(seconds=1) <= event.time <= datetime.now(UTC)
    assert event.message == ModelVersionRegistered(model="iris", version=1)
    carried = trace.get_current_span(event.trace_context()).get_span_context()
    assert carried.trace_id == span.get_span_context().trace_id


async def test_json_topics_carry_json(
    publisher: EventPublisher, new_topic: NewTopicFactory, kafka_bootstrap: str
) -> None:
    topic = spec(await new_topic("alerts"), JSON)
    await publisher.publish(topic, DriftAlert(model="iris", version=2), subject="iris")
    [record] = await read_topic(kafka_bootstrap, topic.name, at_least=1)
    assert header(record.headers, "content-type") == JSON
    assert b'"model": "iris"' in record.value


async def test_a_send_in_batches_lands_each_key_where_send_does_in_order(
    publisher: EventPublisher, new_topic: NewTopicFactory, kafka_bootstrap: str
) -> None:
    topic = TopicSpec(
        await new_topic("batches", partitions=3), 3, Cleanup.DELETE, PROTOBUF, "model"
    )
    models = [f"model-{i}" for i in range(5)]
    # Past one batch's 256 KiB for some keys: a share is cut into several batches.
    batched = [
        topic.record(ModelVersionRegistered(model=models[i % 5], version=i, description="d" * 600),
                     source="tests", subject=models[i % 5])
        for i in range(2000)
    ]  # fmt: skip
    await publisher.send_in_batches(batched)
    await publisher.send([topic.record(ModelVersionRegistered(model=m), source="tests",
                                       subject=m) for m in models])  # fmt: skip

    records = await read_topic(kafka_bootstrap, topic.name, at_least=2005, partitions=3)
    partitions: dict[bytes | None, set[int]] = {}
    versions: dict[bytes | None, list[int]] = {}
    for record in records:
        partitions.setdefault(record.key, set()).add(record.partition)
        message = ModelVersionRegistered.FromString(record.value)
        if message.description:
            versions.setdefault(record.key, []).append(message.version)
    assert all(len(held) == 1 for held in partitions.values())  # where send put the key too
    assert len({p for held in partitions.values() for p in held}) > 1
    for i, model in enumerate(models):
        assert versions[model.encode()] == list(range(i, 2000, 5))


async def test_consumer_resumes_after_restart_without_loss_or_repeats(
    publisher: EventPublisher,
    new_topic: NewTopicFactory,
    kafka_settings: KafkaSettings,
    group_id: str,
) -> None:
    topic = spec(await new_topic("resume", partitions=1))
    for version in range(1, 21):
        await publisher.publish(
            topic, ModelVersionRegistered(model="iris", version=version), subject="iris"
        )

    first_run: list[int] = []
    second_run: list[int] = []

    def consumer_into(seen: list[int]) -> EventConsumer:
        async def handle(envelope: Envelope) -> None:
            assert isinstance(envelope.message, ModelVersionRegistered)
            seen.append(envelope.message.version)
            await asyncio.sleep(0.02)  # slow enough that a stop lands mid-stream

        return EventConsumer(
            kafka_settings,
            group_id=group_id,
            topics=[topic.name],
            handler=handle,
            dead_letters=publisher,
            max_batch=5,
        )

    consumer = consumer_into(first_run)
    await consumer.start()
    await wait_for(lambda: len(first_run) >= 7)
    await consumer.stop()
    assert 7 <= len(first_run) < 20

    consumer = consumer_into(second_run)
    await consumer.start()
    await wait_for(lambda: len(first_run) + len(second_run) >= 20)
    await asyncio.sleep(1.0)  # anything re-delivered would arrive now
    await consumer.stop()
    assert first_run + second_run == list(range(1, 21))


async def test_poison_and_failing_records_go_to_the_dlq_and_the_consumer_goes_on(
    publisher: EventPublisher,
    new_topic: NewTopicFactory,
    kafka_settings: KafkaSettings,
    kafka_bootstrap: str,
    group_id: str,
) -> None:
    topic = spec(await new_topic("poison"))
    producer = AIOKafkaProducer(**client_options(kafka_bootstrap))
    await producer.start()
    await producer.send_and_wait(topic.name, b"not a cloudevent", key=b"iris")
    await producer.stop()
    await publisher.publish(
        topic, ModelVersionRegistered(model="iris", version=666), subject="iris"
    )
    await publisher.publish(topic, ModelVersionRegistered(model="iris", version=2), subject="iris")

    handled: list[int] = []
    attempts: list[int] = []

    async def handle(envelope: Envelope) -> None:
        assert isinstance(envelope.message, ModelVersionRegistered)
        if envelope.message.version == 666:
            attempts.append(666)
            raise RuntimeError("model 666 is cursed")
        handled.append(envelope.message.version)

    consumer = EventConsumer(
        kafka_settings,
        group_id=group_id,
        topics=[topic.name],
        handler=handle,
        dead_letters=publisher,
        retry=FAST_RETRIES,
    )
    await consumer.start()
    await wait_for(lambda: handled == [2])
    await consumer.stop()
    assert attempts == [666, 666, 666]

    dead = [
        record
        for record in await read_topic(
            kafka_bootstrap, DLQ.name, at_least=2, partitions=DLQ.partitions
        )
        if header(record.headers, dead_letters.ORIGIN_TOPIC) == topic.name
    ]
    assert len(dead) == 2
    poison, failed = sorted(
        dead, key=lambda r: int(header(r.headers, dead_letters.ORIGIN_OFFSET) or 0)
    )
    assert poison.value == b"not a cloudevent"
    assert poison.key == b"iris"
    assert (
        header(poison.headers, dead_letters.REASON) == "undecodable: missing header ce_specversion"
    )
    assert header(poison.headers, dead_letters.ORIGIN_OFFSET) == "0"
    assert header(poison.headers, dead_letters.CONSUMER_GROUP) == group_id
    assert "RuntimeError: model 666 is cursed" in (
        header(failed.headers, dead_letters.REASON) or ""
    )
    assert header(failed.headers, "ce_type") == "flywheel.registry.v1.ModelVersionRegistered"
    assert ModelVersionRegistered.FromString(failed.value).version == 666
