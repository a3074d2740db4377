"""The drift stream: prediction logs and ground truth in, through a faust-streaming app.

Replicas share the stream through Kafka's consumer group. Ground truth arrives keyed by
request id; the stream forwards the labels, packed per model (labels.py), to a topic
co-partitioned with the predictions, so partition p of both holds all a model needs and a
label meets its prediction on whichever replica holds p. A replica claims each partition it
is assigned and loads its state from the database (`Partition`), and drops it when the
partition is revoked.

The records are read a fetch at a time rather than as faust events (fetches.py: faust's
per-event machinery alone caps a stream near 10,000 records per second, and data platforms
send one log or one label per record). Each batch skips the records a checkpoint already
covers, is decoded, each partition's share goes to that partition's detector (pure
numpy/scipy work), and it checkpoints: the offsets, the changed windows, the changes of
the label join and the events to publish commit in one transaction (outbox), fenced by the
epochs this replica claimed its partitions at. Kafka's committed offsets follow the
checkpoints, and every rebalance starts each partition after its last checkpoint, so after
a crash or a hand-over the redelivered records are recognised and nothing is lost or
counted twice. A record that does not decode goes to the dead-letter topic with the
reason, and the stream goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import tempfile
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple, TypeVar, cast

import faust
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from faust.transport.consumer import Consumer
from faust.types import TP
from google.protobuf.message import Message
from opentelemetry import trace
from opentelemetry.trace import Span
from sqlalchemy.exc import DBAPIError
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from flywheel.drift.v1.events_pb2 import DriftAlert
from flywheel.drift.v1.ground_truth_pb2 import GroundTruth
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.db import Database
from flywheel_common.dead_letters import DeadLetters
from flywheel_common.events import (
    EventTypes,
    MalformedEvent,
    decode_message,
    event_type,
)
from flywheel_common.outbox import Outbox
from flywheel_common.prediction_logs import ground_truth_label, unpack
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings
from flywheel_common.telemetry import trace_context, traceparent
from flywheel_common.topics import (
    DRIFT_ALERTS,
    GROUND_TRUTH,
    GROUND_TRUTH_BY_MODEL,
    MODEL_METRICS,
    PREDICTIONS,
    TopicSpec,
    await_group_coordinator,
)
from flywheel_drift import converters, labels, storage
from flywheel_drift.domain import Alert, DriftEvent
from flywheel_drift.faust_credentials import faust_credentials
from flywheel_drift.fetches import read_in_fetches
from flywheel_drift.handlers import Detector
from flywheel_drift.handover import Handover
from flywheel_drift.partitions import Partition, Partitions
from flywheel_drift.storage import Checkpoint

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)
M = TypeVar("M", bound=Message)

_DESTINATIONS: dict[str, TopicSpec] = {
    "ModelMetricsWindow": MODEL_METRICS,
    "DriftAlert": DRIFT_ALERTS,
}


class _Step(NamedTuple):
    """A partition's share of one checkpoint transaction."""

    partition: Partition
    checkpoint: Checkpoint
    events: Sequence[DriftEvent]


class DriftStream:
    """Runs the faust app inside the service's event loop (a service component)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        group_id: str,
        new_detector: Callable[[], Detector],
        publisher: EventPublisher,
        database: Database,
        outbox: Outbox,
        *,
        replica: str,
        alerts_kept: int = 10_000,
        batch_size: int = 1000,
        prediction_batch_size: int = 20,
        flush_seconds: float = 1.0,
        late_seconds: float = 10.0,
        session_timeout: float = 10.0,
        predictions_topic: TopicSpec = PREDICTIONS,
        labels_topic: TopicSpec = GROUND_TRUTH,
        labels_by_model_topic: TopicSpec = GROUND_TRUTH_BY_MODEL,
        start_from: str = "latest",
        data_dir: Path | None = None,
    ) -> None:
        """`new_detector` makes the detector of a partition this replica takes over;
        `replica` names this replica as a partition's owner. `batch_size` and
        `prediction_batch_size` count records (of ground truth and of prediction logs).
        `start_from` applies to a new group only: "latest" counts from start-up on,
        "earliest" catches up on what the topics retain. Every `flush_seconds`, time windows
        that ended over `late_seconds` ago close even without newer predictions.
        A replica silent for `session_timeout` seconds loses its partitions to the others.
        `data_dir` is faust's own folder (a temporary one when not given: the app keeps
        nothing there that must survive)."""
        if labels_by_model_topic.partitions != predictions_topic.partitions:
            raise ValueError(
                f"{labels_by_model_topic.name} needs as many partitions as "
                f"{predictions_topic.name} ({predictions_topic.partitions}) to be co-partitioned"
            )
        self.partitions = Partitions(new_detector)
        self._handover = Handover(
            database, replica, self.partitions, (predictions_topic.name, labels_by_model_topic.name)
        )
        self._failed: asyncio.Future[None] | None = None
        self._watch: asyncio.Task[None] | None = None
        self._alerts_kept = alerts_kept
        self._publisher = publisher
        self._dead_letters = DeadLetters(publisher, group_id)
        self._database = database
        self._outbox = outbox
        self._group_id = group_id
        self._kafka = kafka
        self._types = EventTypes.flywheel()
        data_dir = data_dir or Path(tempfile.mkdtemp(prefix="flywheel-faust-"))
        data_dir.mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            group_id,
            broker=[f"kafka://{server}" for server in kafka.bootstrap_servers.split(",")],
            broker_credentials=faust_credentials(kafka),
            store="memory://",
            datadir=str(data_dir),
            web_enabled=False,
            topic_allow_declare=False,  # the topics are provisioned with their own settings
            topic_disable_leader=True,  # no on_leader timers: no leader-election topic needed
            topic_replication_factor=kafka.replication_factor,
            # After the first start, committed offsets carry the group across restarts.
            consumer_auto_offset_reset=start_from,
            broker_commit_interval=1.0,
            # A replica that died hands its partitions over in seconds, not a minute.
            broker_session_timeout=session_timeout,
            broker_heartbeat_interval=session_timeout / 5,
            # Prediction logs are small and many: fetch whole batches at once.
            broker_max_poll_records=max(batch_size, prediction_batch_size) * 4,
            consumer_max_fetch_size=8 * 1024 * 1024,
        )
        self.processed = 0
        """Prediction logs applied (a record may carry many)."""
        self.labelled = 0
        """Ground-truth labels applied."""
        self.dead_lettered = 0
        predictions = self._topic(predictions_topic)
        ground_truth = self._topic(labels_topic)
        labels_by_model = self._topic(labels_by_model_topic)
        wanted = {predictions_topic.name, labels_topic.name, labels_by_model_topic.name}

        # Records are read a fetch at a time (see fetches.py), not as faust events.
        self._fetches = read_in_fetches(self.app, [ground_truth, predictions, labels_by_model])
        self._readers_running: list[asyncio.Task[None]] = []
        self._labels_topic = labels_topic.name
        self._predictions_topic = predictions_topic.name
        self._labels_by_model_topic = labels_by_model_topic.name
        self._labels_by_model = labels_by_model_topic
        self._batch_size = batch_size
        self._prediction_batch_size = prediction_batch_size
        self._checkpointed: dict[TP, int] = {}
        """The last offset checkpointed by (topic, partition), to commit to Kafka."""

        self._assigned = asyncio.Event()
        self._checkpointing = asyncio.Lock()

        async def close_idle_windows() -> None:
            steps = []
            for partition in self.partitions:
                outgoing = partition.detector.flush(time.time(), late_seconds)
                steps.append(_Step(partition, partition.checkpoint([], outgoing), outgoing))
            async with self._failing():
                await self._commit(steps)
            await self._commit_checkpointed()

        async def on_rebalance_complete(app: Any, /, *args: Any, signal: Any, **_: Any) -> None:
            # Sent before faust resumes the partitions and seeks them to their committed
            # offsets: nothing is fetched until the partitions are held and those offsets
            # are the database's.
            assigned = self.app.consumer.assignment()
            async with self._checkpointing, self._failing():
                starts = await self._handover.rebalanced(
                    {(tp.topic, tp.partition) for tp in assigned}, self._position
                )
                await self._commit_offsets(starts)
                self._checkpointed.clear()
            if {tp.topic for tp in assigned} >= wanted:
                self._assigned.set()

        self.app.on_rebalance_complete.connect(on_rebalance_complete)
        self.app.timer(interval=flush_seconds)(close_idle_windows)

    def _readers(self) -> list[Coroutine[Any, Any, None]]:
        return [
            self._read(self._labels_topic, self._batch_size, self._route_labels),
            self._read(self._predictions_topic, self._prediction_batch_size, self._on_predictions),
            # Its records are packed (labels.py): a tenth as many, of up to a batch each.
            self._read(
                self._labels_by_model_topic, max(1, self._batch_size // 10), self._on_labels
            ),
        ]

    async def _read(
        self,
        topic: str,
        batch_size: int,
        handle: Callable[[list[ConsumerRecord[bytes, bytes]]], Awaitable[None]],
    ) -> None:
        """Hand the topic's fetched records to `handle`, `batch_size` at most at a time.
        `handle` binds them to the partitions held before it awaits anything: records
        taken before a rebalance are then checkpointed against the epochs they were read
        under, or dropped with their partition."""
        async with self._failing():
            while True:
                await handle(await self._fetches.take(topic, batch_size))

    async def _route_labels(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        routable = await self._decode(records, labels.routable)
        forwarded = labels.forwarded(self._labels_by_model, routable, source=self._group_id)
        await self._publisher.send_in_batches(forwarded)
        await self._applied_as_is(records)

    async def _on_predictions(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        self.processed += await self._apply(records, unpack, _observe)

    async def _on_labels(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        self.labelled += await self._apply(records, labels.carried, _label)

    async def _apply(
        self,
        records: Sequence[ConsumerRecord[bytes, bytes]],
        contents: Callable[[Message], Sequence[M]],
        effect: Callable[[Detector, Sequence[M]], list[DriftEvent]],
    ) -> int:
        """Decode the records' contents, apply each partition's share to its detector and
        commit the checkpoints; returns how many items (logs, labels) were applied."""
        shares = [
            (partition, fresh, await self._decode(fresh, contents))
            for partition, fresh in self._by_partition(records)
        ]
        steps = []  # no await from the first change to the commit's turn: see _commit
        applied = 0
        for partition, fresh, items in shares:
            outgoing = effect(partition.detector, items)
            steps.append(_Step(partition, partition.checkpoint(fresh, outgoing), outgoing))
            applied += len(items)
        await self._commit(steps)
        return applied

    def _topic(self, spec: TopicSpec) -> Any:
        return self.app.topic(
            spec.name,
            key_type=bytes,
            value_type=bytes,
            key_serializer="raw",
            value_serializer="raw",
            allow_empty=True,
        )

    async def _position(self, topic: str, number: int) -> int | None:
        position: int | None = await self.app.consumer.position(TP(topic, number))
        return position

    async def _commit_offsets(self, starts: dict[tuple[str, int], int]) -> None:
        """Make the database's offsets the group's committed ones, which faust seeks to
        when it resumes the partitions."""
        offsets = {TP(topic, number): offset for (topic, number), offset in starts.items()}
        try:
            # faust's Consumer commits given offsets through `_commit` (its public `commit`
            # commits what agents acked, and no agent reads these topics).
            await cast(Consumer, self.app.consumer)._commit(offsets)
        except KafkaError as exc:  # a rebalance: its hook commits the database's offsets
            log.warning("offsets not committed to Kafka", extra={"error": str(exc)})

    async def _applied_as_is(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Record how far records that leave no state were handled (the forwarded ground
        truth), so a new owner starts after them whatever Kafka committed."""
        offsets: dict[tuple[str, int], int] = {}
        for record in records:
            key = (record.topic, record.partition)
            offsets[key] = max(offsets.get(key, -1), record.offset)
        async with self._database.transaction() as session:
            await storage.advance(session, offsets)
        for (topic, number), offset in offsets.items():
            self._checkpointed[TP(topic, number)] = offset

    async def _commit_checkpointed(self) -> None:
        """Commit to Kafka the offsets checkpointed since the last rebalance (for the
        group's lag; where a partition resumes is the database's to say)."""
        assigned = self.app.consumer.assignment()
        offsets = {
            (tp.topic, tp.partition): offset + 1
            for tp, offset in self._checkpointed.items()
            if tp in assigned
        }
        if offsets:
            await self._commit_offsets(offsets)

    @contextlib.asynccontextmanager
    async def _failing(self) -> AsyncIterator[None]:
        """Work whose failure the stream cannot step over (a checkpoint that does not
        commit, a forward that is not delivered): it ends the stream's supervised task, so
        the service stops and its restart resumes from the database."""
        try:
            yield
        except Exception as exc:
            if self._failed is not None and not self._failed.done():
                self._failed.set_exception(exc)
            raise

    @property
    def task(self) -> asyncio.Task[None] | None:
        """Ends, with the error, when the stream has failed (see `_failing`)."""
        return self._watch

    def _by_partition(
        self, records: Sequence[ConsumerRecord[bytes, bytes]]
    ) -> list[tuple[Partition, list[ConsumerRecord[bytes, bytes]]]]:
        """The records not yet applied, grouped by the partition that holds them."""
        grouped: dict[int, list[ConsumerRecord[bytes, bytes]]] = defaultdict(list)
        for record in records:
            grouped[record.partition].append(record)
        # A partition this replica does not hold is one another replica has claimed since
        # (this one stalled past its session): its owner applies those records.
        return [
            (self.partitions[number], self.partitions[number].unapplied(share))
            for number, share in grouped.items()
            if number in self.partitions
        ]

    async def _decode_each(
        self,
        records: Sequence[ConsumerRecord[bytes, bytes]],
        contents: Callable[[Message], Sequence[M]],
    ) -> list[tuple[ConsumerRecord[bytes, bytes], M]]:
        """Each record with what it carries, by `contents`; a record it refuses
        (ValueError) or that does not decode is dead-lettered."""
        decoded: list[tuple[ConsumerRecord[bytes, bytes], M]] = []
        for record in records:
            try:
                message = decode_message(_headers(record.headers), record.value, self._types)
                try:
                    carried = contents(message)
                except ValueError as exc:
                    raise MalformedEvent(f"{event_type(message)} on {record.topic}: {exc}") from exc
            except MalformedEvent as exc:
                self.dead_lettered += 1
                await self._dead_letters.send(record, f"undecodable: {exc}")
                continue
            for item in carried:
                decoded.append((record, item))
        return decoded

    async def _decode(
        self,
        records: Sequence[ConsumerRecord[bytes, bytes]],
        contents: Callable[[Message], Sequence[M]],
    ) -> list[M]:
        return [item for _, item in await self._decode_each(records, contents)]

    async def _commit(self, steps: Sequence[_Step]) -> None:
        """One transaction: each partition's offsets applied, changed windows, label-join
        changes and alerts, and the events produced.

        Transactions commit one at a time in the order their checkpoints were taken (the
        lock's waiters queue first come, first served), so callers change the detectors,
        take the checkpoints and call this with no await in between: the agents and the
        idle-window timer all checkpoint, and a later checkpoint committed first would
        persist windows ahead of their offsets. A partition another replica has claimed
        since is dropped, with its share: its new owner redoes that work from the
        database."""
        pending = [step for step in steps if not step.checkpoint.is_empty or step.events]
        if not pending:
            return
        async with self._checkpointing:
            while pending:
                lost = await self._write_unless_lost(pending)
                if not lost:
                    break
                log.warning("partitions taken over by another replica; their work is dropped",
                            extra={"partitions": sorted(lost)})  # fmt: skip
                for step in pending:
                    if step.partition.number in lost:
                        self.partitions.drop(step.partition.number, step.partition)
                pending = [step for step in pending if step.partition.number not in lost]
            for step in pending:
                step.partition.committed(step.checkpoint)
                for topic, offset in step.checkpoint.offsets.items():
                    self._checkpointed[TP(topic, step.partition.number)] = offset

    async def _write_unless_lost(self, steps: Sequence[_Step]) -> set[int]:
        """Commit the steps unless some partition was claimed by another replica since;
        returns those. Retries while the database does not answer, a few times."""
        epochs = {step.partition.number: step.partition.epoch for step in steps}
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(5),
            wait=wait_exponential_jitter(multiplier=0.2, max=2.0),
            retry=retry_if_exception_type(DBAPIError),
            reraise=True,
        ):
            with attempt:
                async with self._database.transaction() as session:
                    lost = await storage.lost(session, epochs)
                    if not lost:
                        await self._write(session, steps)
        return lost

    async def _write(self, session: Any, steps: Sequence[_Step]) -> None:
        await storage.save(session, [step.checkpoint for step in steps], self._alerts_kept)
        for step in steps:
            for event in step.events:
                message = converters.event_message(event)
                topic = _DESTINATIONS[type(message).__name__]
                if isinstance(event, Alert) and isinstance(message, DriftAlert):
                    with _alert_span(event) as span:
                        # The alert carries the detector's span: its consumers' spans, the
                        # retrain run and the training job continue the request's trace.
                        message.traceparent = traceparent(span.get_span_context())
                        self._outbox.stage(session, topic, message, subject=event.model)
                else:
                    self._outbox.stage(session, topic, message, subject=event.model)

    async def start(self) -> None:
        await await_group_coordinator(self._kafka, self._group_id)
        self._failed = asyncio.get_running_loop().create_future()
        self._watch = asyncio.create_task(self._until_failed(self._failed), name="drift-stream")
        self._readers_running = [
            asyncio.create_task(reader, name="drift-stream-reader") for reader in self._readers()
        ]
        await self.app.start()
        try:  # where each partition starts is fixed once its first assignment completes
            async with asyncio.timeout(60.0):
                await self._assigned.wait()
        except TimeoutError:
            log.warning("the drift stream has no partitions yet; starting anyway")

    @staticmethod
    async def _until_failed(failed: asyncio.Future[None]) -> None:
        await failed

    async def stop(self) -> None:
        for task in (self._watch, *self._readers_running):
            if task is not None:
                task.cancel()
        await self.app.stop()


def _observe(detector: Detector, logs: Sequence[PredictionLog]) -> list[DriftEvent]:
    return detector.observe(converters.batches(logs))


def _label(detector: Detector, truths: Sequence[GroundTruth]) -> list[DriftEvent]:
    outgoing: list[DriftEvent] = []
    for truth in truths:
        label = ground_truth_label(truth)
        if label is not None:
            outgoing += detector.label(truth.request_id, label, time.time())
    return outgoing


def _alert_span(alert: Alert) -> AbstractContextManager[Span]:
    """A span of the detector raising `alert`, continuing the trace of the request that
    closed its window (a new trace when that request was not traced)."""
    window = alert.window
    return _tracer.start_as_current_span(
        "drift alert",
        context=trace_context(alert.traceparent),
        attributes={
            "flywheel.model": alert.model,
            "flywheel.version": alert.version,
            "flywheel.window": window.window_id if window is not None else "",
            "flywheel.alert_id": alert.alert_id,
        },
    )


def _headers(headers: Any) -> Sequence[tuple[str, bytes]]:
    """Kafka headers as (name, value) pairs: aiokafka hands them over as such."""
    return headers or ()
