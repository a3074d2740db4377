"""Every consumed topic gets random bytes and wrong or missing headers, on the real broker.

Each bad record lands in flywheel.dlq with a reason, once per consumer of its topic, and
every consumer goes on: a valid event published after the bad ones is handled (it is not
dead-lettered, and a bad record published after it is), and no service process dies.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from google.protobuf.message import Message

from flywheel.deployer.v1 import events_pb2 as deployer_events
from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel.drift.v1 import ground_truth_pb2
from flywheel.gateway.v1 import events_pb2 as gateway_events
from flywheel.registry.v1 import events_pb2 as registry_events
from flywheel_common.dead_letters import CONSUMER_GROUP, ORIGIN_OFFSET, ORIGIN_TOPIC, REASON
from flywheel_common.events import JSON, PROTOBUF, encode_event, header
from flywheel_common.timestamps import now
from flywheel_common.topics import (
    DEPLOYMENT_EVENTS,
    DEPLOYMENTS,
    DLQ,
    DRIFT_ALERTS,
    GATEWAY_STATUS,
    GROUND_TRUTH,
    GROUND_TRUTH_BY_MODEL,
    MODEL_EVENTS,
    MODEL_METRICS,
    PREDICTIONS,
    TopicSpec,
)

from .fleet import FuzzFleet

pytestmark = pytest.mark.integration

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class ConsumedTopic:
    topic: TopicSpec
    consumers: int
    """How many consumers of the fleet read it (each dead-letters a bad record once)."""
    valid: Callable[[str], Message]
    """An event for key `key` that every consumer of the topic handles without error."""
    content_type: str = PROTOBUF


CONSUMED = [
    ConsumedTopic(
        DEPLOYMENT_EVENTS,  # the registry follows rollbacks
        1,
        lambda key: deployer_events.RolloutStarted(model=key, rollout_id=key, version=1),
    ),
    ConsumedTopic(
        MODEL_EVENTS,  # the deployer follows promotions; the drift detector prefetches references
        2,
        lambda key: registry_events.ModelVersionRegistered(model=key, version=1),
    ),
    ConsumedTopic(
        MODEL_METRICS,  # the deployer records windows; the retrain trigger watches decay
        2,
        lambda key: drift_events.ModelMetricsWindow(model=key, version=1),
    ),
    ConsumedTopic(
        DRIFT_ALERTS,  # the retrain trigger
        1,
        lambda key: drift_events.DriftAlert(model=key, version=1),
        JSON,
    ),
    ConsumedTopic(
        GATEWAY_STATUS,  # the deployer's view of the gateways
        1,
        lambda key: gateway_events.GatewayStatus(gateway_id=key, draining=True, heartbeat_at=now()),
    ),
    ConsumedTopic(
        DEPLOYMENTS,  # every gateway's routing table
        1,
        lambda key: deployer_events.DeploymentState(model=key),
    ),
    ConsumedTopic(
        PREDICTIONS,  # the drift detector
        1,
        lambda key: gateway_events.PredictionLog(model=key, request_id=key, received_at=now()),
    ),
    ConsumedTopic(
        GROUND_TRUTH,  # the drift detector routes labels to the model's partition
        1,
        lambda key: ground_truth_pb2.GroundTruth(request_id=key, model=key),
    ),
    ConsumedTopic(
        GROUND_TRUTH_BY_MODEL,  # the drift detector joins them with predictions
        1,
        lambda key: ground_truth_pb2.GroundTruth(request_id=key, model=key),
    ),
]
UNDECODABLE = b"\x0a\xff\xff\xff"  # a length-delimited field whose length never ends


def _bad_records(spec: ConsumedTopic, key: str) -> list[tuple[bytes, Headers]]:
    """(value, headers) of records no consumer can decode, each wrong in its own way."""
    good = encode_event(spec.topic.name, spec.valid(key), source="fuzz", subject=key).headers
    good = [(name, value) for name, value in good if name != "content-type"]

    def without(name: str) -> Headers:
        return [(n, v) for n, v in good if n != name]

    def replaced(name: str, value: bytes) -> Headers:
        return [*without(name), (name, value)]

    protobuf = [("content-type", PROTOBUF.encode())]
    return [
        (UNDECODABLE, [*good, *protobuf]),  # right headers, bytes that do not parse
        (uuid.uuid4().bytes + UNDECODABLE, []),  # no headers at all
        (b"", [*without("ce_type"), *protobuf]),
        (b"", [*without("ce_id"), *protobuf]),
        (b"", [*replaced("ce_specversion", b"0.3"), *protobuf]),
        (b"", [*replaced("ce_type", b"flywheel.v1.NoSuchEvent"), *protobuf]),
        (b"", [*replaced("ce_source", b"\xff\xfe not utf-8"), *protobuf]),
        (b"", [*good, ("content-type", b"text/plain")]),
        (b"{not json", [*good, ("content-type", JSON.encode())]),
        (b"", [*replaced("ce_time", b"yesterday"), *protobuf]),
    ]


async def _end_offsets(bootstrap: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(DLQ.name, number) for number in range(DLQ.partitions)]
        return dict(await consumer.end_offsets(partitions))
    finally:
        await consumer.stop()


async def _dead_letters(
    bootstrap: str,
    start: dict[TopicPartition, int],
    key: bytes,
    done: Callable[[list[Headers]], bool],
    timeout: float = 120.0,
) -> list[Headers]:
    """Headers of the dead letters of `key` since `start`, once `done` says they are all."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    found: list[Headers] = []
    try:
        consumer.assign(list(start))
        for partition, offset in start.items():
            consumer.seek(partition, offset)
        async with asyncio.timeout(timeout):
            while not done(found):
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    found += [list(r.headers) for r in records if r.key == key]
    except TimeoutError:
        pass
    finally:
        await consumer.stop()
    return found


@pytest.mark.parametrize("spec", CONSUMED, ids=lambda spec: spec.topic.name)
async def test_bad_records_are_dead_lettered_with_a_reason_and_consumers_go_on(
    fleet: FuzzFleet, kafka_bootstrap: str, spec: ConsumedTopic
) -> None:
    key = f"fuzz-topic-{uuid.uuid4().hex[:8]}"
    start = await _end_offsets(kafka_bootstrap)
    bad = _bad_records(spec, key)
    valid = encode_event(
        spec.topic.name, spec.valid(key), source="fuzz", subject=key, content_type=spec.content_type
    )
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        offsets: list[int] = []
        for value, headers in bad:
            sent = await producer.send_and_wait(
                spec.topic.name, value, key=key.encode(), headers=headers
            )
            offsets.append(sent.offset)
        sent = await producer.send_and_wait(
            spec.topic.name, valid.value, key=valid.key, headers=valid.headers
        )
        valid_offset = sent.offset
        value, headers = bad[0]
        sentinel = await producer.send_and_wait(
            spec.topic.name, value, key=key.encode(), headers=headers
        )
        offsets.append(sentinel.offset)
        if spec.topic is GATEWAY_STATUS or spec.topic is DEPLOYMENTS:
            await producer.send_and_wait(spec.topic.name, None, key=key.encode())
    finally:
        await producer.stop()

    def by_consumer(letters: list[Headers]) -> dict[str, set[int]]:
        seen: dict[str, set[int]] = defaultdict(set)
        for headers in letters:
            consumer = header(headers, CONSUMER_GROUP) or ""
            if header(headers, ORIGIN_TOPIC) == spec.topic.name and fleet.tag in consumer:
                seen[consumer].add(int(header(headers, ORIGIN_OFFSET) or -1))
        return seen

    def complete(letters: list[Headers]) -> bool:
        seen = by_consumer(letters)
        return len(seen) >= spec.consumers and all(set(offsets) <= got for got in seen.values())

    letters = await _dead_letters(kafka_bootstrap, start, key.encode(), complete)
    seen = by_consumer(letters)
    assert len(seen) == spec.consumers, (spec.topic.name, dict(seen))
    for consumer, dead in seen.items():
        assert set(offsets) <= dead, f"{consumer} did not dead-letter {set(offsets) - dead}"
        assert valid_offset not in dead, f"{consumer} dead-lettered the valid event"
    reasons = [header(h, REASON) or "" for h in letters if header(h, ORIGIN_TOPIC)]
    assert all(reasons), "a dead letter without a reason"
    assert not fleet.exited(), f"a service process died: {fleet.exited()}"
