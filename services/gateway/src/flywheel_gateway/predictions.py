"""Prediction logs: off the request path, packed per model, to flywheel.predictions, never
lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable

from opentelemetry import metrics

from flywheel.gateway.v1.events_pb2 import PredictionLog, PredictionLogBatch
from flywheel_common.events import OutgoingRecord, event_type, header
from flywheel_common.prediction_logs import pack
from flywheel_common.publisher import DeliveryFailed, EventPublisher
from flywheel_gateway.journal import Journal

log = logging.getLogger(__name__)
_meter = metrics.get_meter(__name__)
_logged = _meter.create_counter(
    "flywheel.predictions.logged", description="Prediction logs acknowledged by Kafka"
)
_journaled = _meter.create_counter(
    "flywheel.predictions.journaled", description="Prediction logs written to the disk journal"
)
_replayed = _meter.create_counter(
    "flywheel.predictions.replayed", description="Journaled prediction logs sent to Kafka"
)
_dropped = _meter.create_counter(
    "flywheel.predictions.dropped", description="Prediction logs lost: buffer and journal full"
)


KAFKA_RECORD_LIMIT = 1024 * 1024
"""The largest record the producer and a broker with default settings accept (aiokafka's
`max_request_size`, Kafka's `message.max.bytes`)."""


class PredictionLogger:
    """Buffers prediction logs and publishes them, packed per model, from a background task.

    The request path only enqueues a function that builds the log. The task builds what has
    queued (up to `max_batch` logs), packs each model's logs into `PredictionLogBatch`
    records of at most `logs_per_record`, and sends them. When Kafka refuses a record, or
    the memory buffer is full, records go to a bounded disk journal; while the journal holds
    anything, new records queue behind it, and it is replayed in order once Kafka takes a
    send again.
    Memory stays bounded by `max_buffered` logs; only a full journal loses logs (counted).
    A record is delivered whole or not at all, so each log reaches Kafka exactly once.
    """

    def __init__(
        self,
        publisher: EventPublisher,
        journal: Journal,
        sample_rate: float = 1.0,
        max_buffered: int = 10_000,
        max_batch: int = 1000,
        logs_per_record: int = 200,
        retry_seconds: float = 1.0,
    ) -> None:
        self._publisher = publisher
        self._journal = journal
        self._sample_rate = sample_rate
        self._queue: asyncio.Queue[Callable[[], PredictionLog]] = asyncio.Queue(max_buffered)
        self._max_batch = max_batch
        self._logs_per_record = logs_per_record
        self._retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None
        self._restart_publisher = False
        self._log_counts: dict[str, int] = {}
        """Logs per record packed by this process, by event id (the metrics count logs)."""

    def log(self, prediction: Callable[[], PredictionLog]) -> None:
        """Queue a prediction's log; `prediction` builds it later, in the logger's task."""
        if self._sample_rate < 1.0 and random.random() >= self._sample_rate:
            return
        try:
            self._queue.put_nowait(prediction)
        except asyncio.QueueFull:
            self._spill(self._pack([prediction]))

    def _pack(self, queued: list[Callable[[], PredictionLog]]) -> list[OutgoingRecord]:
        logs = []
        for build in queued:
            try:
                logs.append(build())
            except Exception:  # one request's log must not stop the logging of all others
                _dropped.add(1)
                log.exception("prediction log not built; dropped")
        for log_ in logs:
            log_.sample_rate = self._sample_rate
        records = []
        for record, count in pack(
            logs, source=self._publisher.source, per_record=self._logs_per_record
        ):
            if len(record.value) > KAFKA_RECORD_LIMIT:
                # Kafka would refuse it on every try, holding up every log behind it.
                _dropped.add(count)
                log.error(
                    "prediction log larger than Kafka takes; dropped",
                    extra={"bytes": len(record.value), "limit": KAFKA_RECORD_LIMIT},
                )
                continue
            self._log_counts[record.event_id] = count
            records.append(record)
        return records

    def _count(self, records: list[OutgoingRecord]) -> int:
        """Logs in `records`, forgetting them (the metrics count logs, not records)."""
        total = 0
        for record in records:
            known = self._log_counts.pop(record.event_id, None)
            total += known if known is not None else _logs_in(record)
        return total

    def _spill(self, records: list[OutgoingRecord]) -> None:
        written = self._journal.append(records)
        _journaled.add(self._count(records[:written]))
        if written < len(records):
            dropped = self._count(records[written:])
            _dropped.add(dropped)
            log.error("prediction journal full; logs dropped", extra={"dropped": dropped})

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The long-running loop, watched by the service's supervisor."""
        return self._task

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="prediction-logger")

    async def stop(self) -> None:
        """Hand what is buffered to Kafka if it answers quickly, else to the journal."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        remaining = []
        while not self._queue.empty():
            remaining.append(self._queue.get_nowait())
        if remaining:
            records = self._pack(remaining)
            failed = await self._send(records, timeout=10.0)
            sent = {record.event_id for record in failed}
            _logged.add(self._count([r for r in records if r.event_id not in sent]))
            self._spill(failed)

    async def _next_batch(self) -> list[OutgoingRecord]:
        """The records of the logs queued so far (waiting up to the retry interval for one)."""
        try:
            queued = [await asyncio.wait_for(self._queue.get(), self._retry_seconds)]
        except TimeoutError:
            return []
        while len(queued) < self._max_batch and not self._queue.empty():
            queued.append(self._queue.get_nowait())
        return self._pack(queued)

    async def _send(
        self, records: list[OutgoingRecord], timeout: float | None = None
    ) -> list[OutgoingRecord]:
        """Send; returns the records Kafka did not acknowledge (empty when all went)."""
        try:
            if self._restart_publisher:
                await self._publisher.restart()
                self._restart_publisher = False
            await asyncio.wait_for(self._publisher.send(records), timeout)
        except DeliveryFailed as failure:
            self._restart_publisher = True
            log.warning("prediction logs not delivered", extra={"error": str(failure)})
            return failure.failed
        except Exception as exc:
            self._restart_publisher = True
            log.warning("prediction logs not sent", extra={"error": str(exc)})
            return records
        return []

    async def _replay(self) -> bool:
        """Send the journal in order; True when it is empty afterwards."""
        pending = list(self._journal.records())
        for start in range(0, len(pending), self._max_batch):
            chunk = pending[start : start + self._max_batch]
            failed = await self._send(chunk)
            unsent = {record.event_id for record in failed}
            _replayed.add(self._count([r for r in chunk if r.event_id not in unsent]))
            if failed:
                # Keep exactly what Kafka has not taken, in order, ahead of later spills.
                later = list(self._journal.records())[len(pending) :]
                self._journal.clear()
                self._journal.append([*failed, *pending[start + len(chunk) :], *later])
                return False
        self._journal.drop_first(len(pending))  # records spilled meanwhile stay
        return self._journal.empty

    async def _run(self) -> None:
        # Waits on the producer's own delivery timeout rather than a shorter one of ours: a
        # send given up early could still be delivered later and then be replayed twice.
        if not self._journal.empty:
            await self._replay()
        while True:
            batch = await self._next_batch()
            if not self._journal.empty:
                if batch:
                    self._spill(batch)
                if not await self._replay():
                    await asyncio.sleep(self._retry_seconds)
                continue
            if batch:
                failed = await self._send(batch)
                unsent = {record.event_id for record in failed}
                _logged.add(self._count([r for r in batch if r.event_id not in unsent]))
                if failed:
                    self._spill(failed)


def _logs_in(record: OutgoingRecord) -> int:
    """Logs in a record journaled by an earlier process: decoded, as no count was kept."""
    if header(record.headers, "ce_type") == event_type(PredictionLog):
        return 1
    return len(PredictionLogBatch.FromString(record.value).logs)
