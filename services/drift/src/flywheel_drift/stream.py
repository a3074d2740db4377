"""The faust-streaming application: thin agents over prediction logs and ground truth.

Each agent takes events in batches, skips those a checkpoint already covers, decodes them,
hands the batch to the detector (pure numpy/scipy work), and checkpoints: the offsets, the
changed windows, the changes of the label join and the events to publish commit in one
transaction (outbox). Faust commits Kafka offsets only for batches already checkpointed, so
after a crash the redelivered events are recognised and nothing is lost or counted twice.
An event that does not decode goes to the dead-letter topic with the reason, and the stream
goes on.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import faust
from google.protobuf.message import Message

from flywheel.drift.v1.ground_truth_pb2 import GroundTruth
from flywheel_common.db import Database
from flywheel_common.dead_letters import DeadLetters
from flywheel_common.events import EventTypes, MalformedEvent, decode_event
from flywheel_common.outbox import Outbox
from flywheel_common.prediction_logs import ground_truth_label, unpack
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings
from flywheel_common.topics import (
    DRIFT_ALERTS,
    GROUND_TRUTH,
    MODEL_METRICS,
    PREDICTIONS,
    TopicSpec,
    await_group_coordinator,
)
from flywheel_drift import converters, snapshots, storage
from flywheel_drift.domain import DriftEvent
from flywheel_drift.handlers import Detector
from flywheel_drift.windows import JoinChanges

log = logging.getLogger(__name__)
M = TypeVar("M", bound=Message)

MIN_JOIN_LOG_ENTRIES = 100_000
"""The label join's log is compacted into a base no sooner than this many entries."""

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
        detector: Detector,
        publisher: EventPublisher,
        database: Database,
        outbox: Outbox,
        batch_size: int = 1000,
        batch_seconds: float = 0.5,
        prediction_batch_size: int = 20,
        flush_seconds: float = 1.0,
        late_seconds: float = 10.0,
        predictions_topic: TopicSpec = PREDICTIONS,
        labels_topic: TopicSpec = GROUND_TRUTH,
        start_from: str = "latest",
        data_dir: Path | None = None,
    ) -> None:
        """`batch_size` and `prediction_batch_size` count records (of ground truth and of
        prediction logs). `start_from` applies to a new group only: "latest" counts from
        start-up on, "earliest" catches up on what the topics retain. Every `flush_seconds`,
        time windows that ended over `late_seconds` ago close even without newer
        predictions. `data_dir` is faust's own folder (a temporary one when not given: the
        app keeps nothing there that must survive)."""
        self._detector = detector
        self._dead_letters = DeadLetters(publisher, group_id)
        self._database = database
        self._outbox = outbox
        self._applied: dict[tuple[str, int], int] = {}
        self._join_logged = 0
        """Label-join entries in the checkpoint log since its last base."""
        self._group_id = group_id
        self._bootstrap_servers = kafka.bootstrap_servers
        self._types = EventTypes.flywheel()
        self.app = faust.App(
            group_id,
            broker=[f"kafka://{server}" for server in kafka.bootstrap_servers.split(",")],
            store="memory://",
            datadir=str(data_dir or Path(tempfile.mkdtemp(prefix="flywheel-faust-"))),
            web_enabled=False,
            topic_allow_declare=False,  # the topics are provisioned with their own settings
            topic_disable_leader=True,  # no on_leader timers: no leader-election topic needed
            topic_replication_factor=kafka.replication_factor,
            # After the first start, committed offsets carry the group across restarts.
            consumer_auto_offset_reset=start_from,
            broker_commit_interval=1.0,
            # A replica that died hands its partitions over in seconds, not a minute.
            broker_session_timeout=10.0,
            broker_heartbeat_interval=2.0,
            # Prediction logs are small and many: fetch and buffer whole batches at once.
            broker_max_poll_records=max(batch_size, prediction_batch_size) * 4,
            consumer_max_fetch_size=8 * 1024 * 1024,
            stream_buffer_maxsize=max(batch_size, prediction_batch_size) * 2,
        )
        self.processed = 0
        """Prediction logs applied (a record may carry many)."""
        self.dead_lettered = 0
        predictions = self._topic(predictions_topic)
        labels = self._topic(labels_topic)
        wanted = {predictions_topic.name, labels_topic.name}

        async def on_predictions(stream: Any) -> AsyncIterator[None]:
            async for events in stream.take_events(prediction_batch_size, within=batch_seconds):
                fresh = self._unapplied(events)
                logs = await self._decode(fresh, unpack)
                outgoing = self._detector.observe(converters.batches(logs))
                await self._checkpoint(fresh, outgoing)
                self.processed += len(logs)
                yield None

        async def on_labels(stream: Any) -> AsyncIterator[None]:
            async for events in stream.take_events(batch_size, within=batch_seconds):
                fresh = self._unapplied(events)
                outgoing: list[DriftEvent] = []
                for truth in await self._decode(fresh, _ground_truth):
                    label = ground_truth_label(truth)
                    if label is not None:
                        outgoing += self._detector.label(truth.request_id, label, time.time())
                await self._checkpoint(fresh, outgoing)
                yield None

        self._assigned = asyncio.Event()
        self._checkpointing = asyncio.Lock()

        async def close_idle_windows() -> None:
            await self._checkpoint([], self._detector.flush(time.time(), late_seconds))

        async def on_assigned(app: Any, /, *args: Any, signal: Any, **_: Any) -> None:
            assigned = args[0] if args else set()
            if {tp.topic for tp in assigned} >= wanted:
                self._assigned.set()

        self.app.on_partitions_assigned.connect(on_assigned)
        self.app.agent(predictions, name="drift.predictions")(on_predictions)
        self.app.agent(labels, name="drift.ground-truth")(on_labels)
        self.app.timer(interval=flush_seconds)(close_idle_windows)

    def _topic(self, spec: TopicSpec) -> Any:
        return self.app.topic(
            spec.name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            allow_empty=True,
        )

    async def _decode(
        self, events: Sequence[Any], contents: Callable[[Message], Sequence[M]]
    ) -> list[M]:
        """What the events carry, by `contents`; an event it refuses (ValueError) or that
        does not decode is dead-lettered."""
        decoded: list[M] = []
        for event in events:
            message = event.message
            try:
                envelope = decode_event(
                    _headers(message.headers), message.value or b"", self._types, key=message.key
                )
                try:
                    carried = contents(envelope.message)
                except ValueError as exc:
                    raise MalformedEvent(f"{envelope.type} on {message.topic}: {exc}") from exc
            except MalformedEvent as exc:
                self.dead_lettered += 1
                await self._dead_letters.send(_Record(message), f"undecodable: {exc}")
                continue
            decoded.extend(carried)
        return decoded

    def _unapplied(self, events: Sequence[Any]) -> list[Any]:
        """Events after the checkpoint: a redelivery after a crash is applied only once."""
        return [
            event
            for event in events
            if event.message.offset
            > self._applied.get((event.message.topic, event.message.partition), -1)
        ]

    async def _checkpoint(self, events: Sequence[Any], outgoing: Sequence[DriftEvent]) -> None:
        """One transaction: the offsets applied, the changed windows and label join, the
        events produced.

        The windows are snapshot at once, with no await after the detector changed them, so a
        snapshot holds exactly the batches whose offsets it commits. Transactions then
        commit one at a time in snapshot order (the lock's waiters queue first come, first
        served): the agents and the idle-window timer all checkpoint, and a later snapshot
        committed first would persist windows ahead of their offsets."""
        applied: dict[tuple[str, int], int] = {}
        for event in events:
            key = (event.message.topic, event.message.partition)
            applied[key] = max(applied.get(key, -1), event.message.offset)
        if not applied and not outgoing:
            return
        changed, self._detector.changed = self._detector.changed, set()
        states = {key: snapshots.encode(self._detector.snapshot(*key)) for key in changed}
        messages = [(converters.event_message(event), event.model) for event in outgoing]
        join, join_is_base = self._join_checkpoint()
        async with self._checkpointing:
            async with self._database.transaction() as session:
                await storage.save(session, applied, states, join, join_is_base)
                for message, subject in messages:
                    topic = _DESTINATIONS[type(message).__name__]
                    self._outbox.stage(session, topic, message, subject=subject)
            self._applied.update(applied)

    def _join_checkpoint(self) -> tuple[JoinChanges, bool]:
        """What to log of the label join: its changes, or all of it once the changes logged
        since the last base outnumber twice what it holds (the log stays within three
        times the join, and a restart replays at most that)."""
        join = self._detector.join
        changes = join.changes()
        self._join_logged += len(changes)
        if self._join_logged <= max(2 * join.size, MIN_JOIN_LOG_ENTRIES):
            return changes, False
        self._join_logged = 0
        return join.everything(), True

    async def start(self) -> None:
        async with self._database.transaction() as session:
            self._applied = await storage.offsets(session)
            for (model, version), snapshot in (await storage.window_states(session)).items():
                self._detector.restore(model, version, snapshots.decode(model, version, snapshot))
            for changes in await storage.join_log(session):
                self._detector.join.apply(changes)
                self._join_logged += len(changes)
        self._detector.changed.clear()
        await await_group_coordinator(self._bootstrap_servers, self._group_id)
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


def _ground_truth(message: Message) -> Sequence[GroundTruth]:
    if not isinstance(message, GroundTruth):
        raise ValueError(f"expected {GroundTruth.DESCRIPTOR.full_name}")
    return (message,)


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
