"""The faust-streaming application: thin agents over prediction logs and ground truth.

Each agent takes events in batches, decodes them, hands the batch to the engine (pure
numpy/scipy work) and publishes what the engine returns. An event that does not decode goes
to the dead-letter topic with the reason, and the stream goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any, TypeVar

import faust
from google.protobuf.message import Message

from flywheel.drift.v1.ground_truth_pb2 import GroundTruth
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.dead_letters import dead_letter
from flywheel_common.events import EventTypes, MalformedEvent, decode_event
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings
from flywheel_common.topics import (
    DRIFT_ALERTS,
    GROUND_TRUTH,
    MODEL_METRICS,
    PREDICTIONS,
    TopicSpec,
)
from flywheel_drift.engine import DriftEngine, Outgoing

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)

_DESTINATIONS: dict[str, TopicSpec] = {
    "ModelMetricsWindow": MODEL_METRICS,
    "DriftAlert": DRIFT_ALERTS,
}


class DriftStream:
    """Runs the faust app inside the service's event loop (a service component)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        group_id: str,
        engine: DriftEngine,
        publisher: EventPublisher,
        batch_size: int = 1000,
        batch_seconds: float = 0.5,
        predictions_topic: TopicSpec = PREDICTIONS,
        labels_topic: TopicSpec = GROUND_TRUTH,
        start_from: str = "latest",
    ) -> None:
        """`start_from` applies to a new group only: "latest" counts from start-up on,
        "earliest" catches up on what the topics retain."""
        self._engine = engine
        self._publisher = publisher
        self._group_id = group_id
        self._types = EventTypes.flywheel()
        self.app = faust.App(
            group_id,
            broker=[f"kafka://{server}" for server in kafka.bootstrap_servers.split(",")],
            store="memory://",
            web_enabled=False,
            topic_allow_declare=False,  # the topics are provisioned with their own settings
            topic_replication_factor=kafka.replication_factor,
            # After the first start, committed offsets carry the group across restarts.
            consumer_auto_offset_reset=start_from,
            broker_commit_interval=1.0,
            # Prediction logs are small and many: fetch and buffer whole batches at once.
            broker_max_poll_records=batch_size * 4,
            consumer_max_fetch_size=8 * 1024 * 1024,
            stream_buffer_maxsize=batch_size * 8,
        )
        self.processed = 0
        self.dead_lettered = 0
        predictions = self._topic(predictions_topic)
        labels = self._topic(labels_topic)
        wanted = {predictions_topic.name, labels_topic.name}

        async def on_predictions(stream: Any) -> AsyncIterator[None]:
            async for events in stream.take_events(batch_size, within=batch_seconds):
                decoded = await self._decode(events, PredictionLog)
                await self._publish(self._engine.observe(decoded))
                self.processed += len(events)
                yield None

        async def on_labels(stream: Any) -> AsyncIterator[None]:
            async for events in stream.take_events(batch_size, within=batch_seconds):
                outgoing: Outgoing = []
                for truth in await self._decode(events, GroundTruth):
                    outgoing += self._engine.label(truth, time.time())
                await self._publish(outgoing)
                yield None

        self._assigned = asyncio.Event()

        async def on_assigned(app: Any, /, *args: Any, signal: Any, **_: Any) -> None:
            assigned = args[0] if args else set()
            if {tp.topic for tp in assigned} >= wanted:
                self._assigned.set()

        self.app.on_partitions_assigned.connect(on_assigned)
        self.app.agent(predictions, name="drift.predictions")(on_predictions)
        self.app.agent(labels, name="drift.ground-truth")(on_labels)

    def _topic(self, spec: TopicSpec) -> Any:
        return self.app.topic(
            spec.name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            allow_empty=True,
        )

    async def _decode(self, events: Sequence[Any], kind: type[M]) -> list[M]:
        decoded: list[M] = []
        for event in events:
            message = event.message
            try:
                envelope = decode_event(
                    _headers(message.headers), message.value or b"", self._types, key=message.key
                )
                if not isinstance(envelope.message, kind):
                    raise MalformedEvent(
                        f"{envelope.type} on {message.topic}, expected {kind.DESCRIPTOR.full_name}"
                    )
            except MalformedEvent as exc:
                self.dead_lettered += 1
                log.warning(
                    "record dead-lettered",
                    extra={"topic": message.topic, "offset": message.offset, "reason": str(exc)},
                )
                record = _Record(message)
                await self._publisher.send(
                    [dead_letter(record, f"undecodable: {exc}", self._group_id)]
                )
                continue
            decoded.append(envelope.message)
        return decoded

    async def _publish(self, outgoing: Outgoing) -> None:
        if not outgoing:
            return
        records = [
            _DESTINATIONS[type(message).__name__].record(
                message, source=self._publisher.source, subject=subject
            )
            for message, subject in outgoing
        ]
        await self._publisher.send(records)

    async def start(self) -> None:
        await self.app.start()
        await self._pin_start_positions()

    async def _pin_start_positions(self, timeout: float = 60.0) -> None:
        """Wait for the partitions and fix where the stream starts before start() returns,
        so nothing published after start-up is skipped by the "latest" reset."""
        try:
            async with asyncio.timeout(timeout):
                await self._assigned.wait()
                for partition in self.app.consumer.assignment():
                    await self.app.consumer.position(partition)
        except TimeoutError:
            log.warning("the drift stream has no partitions yet; starting anyway")

    async def stop(self) -> None:
        await self.app.stop()


def _headers(headers: Any) -> Sequence[tuple[str, bytes]]:
    """Kafka headers as (name, value) pairs: faust hands them over as such, or as a dict."""
    if not headers:
        return ()
    return list(headers.items()) if isinstance(headers, dict) else headers


class _Record:
    """A faust message seen as the consumed record a dead letter describes."""

    def __init__(self, message: Any) -> None:
        self.topic: str = message.topic
        self.partition: int = message.partition
        self.offset: int = message.offset
        self.key: bytes | None = message.key
        self.value: bytes | None = message.value
        self.headers = _headers(message.headers)
