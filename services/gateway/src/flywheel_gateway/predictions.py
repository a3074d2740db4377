"""Prediction logs: off the request path, in batches, to flywheel.predictions, never lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from opentelemetry import metrics

from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.events import OutgoingRecord
from flywheel_common.publisher import DeliveryFailed, EventPublisher
from flywheel_common.topics import PREDICTIONS
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


class PredictionLogger:
    """Buffers prediction logs and publishes them in batches from a background task.

    The request path only encodes and enqueues. When Kafka refuses a batch, or the memory
    buffer is full, records go to a bounded disk journal; while the journal holds anything,
    new records queue behind it, and it is replayed in order once Kafka takes a send again.
    Memory stays bounded by `max_buffered`; only a full journal loses records (counted).
    """

    def __init__(
        self,
        publisher: EventPublisher,
        journal: Journal,
        sample_rate: float = 1.0,
        max_buffered: int = 10_000,
        max_batch: int = 1000,
        retry_seconds: float = 1.0,
    ) -> None:
        self._publisher = publisher
        self._journal = journal
        self._sample_rate = sample_rate
        self._queue: asyncio.Queue[OutgoingRecord] = asyncio.Queue(max_buffered)
        self._max_batch = max_batch
        self._retry_seconds = retry_seconds
        self._task: asyncio.Task[None] | None = None
        self._restart_publisher = False

    def log(self, prediction: PredictionLog) -> None:
        if self._sample_rate < 1.0 and random.random() >= self._sample_rate:
            return
        prediction.sample_rate = self._sample_rate
        record = PREDICTIONS.record(
            prediction, source=self._publisher.source, subject=prediction.model
        )
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self._spill([record])

    def _spill(self, records: list[OutgoingRecord]) -> None:
        written = self._journal.append(records)
        _journaled.add(written)
        if written < len(records):
            _dropped.add(len(records) - written)
            log.error(
                "prediction journal full; logs dropped", extra={"dropped": len(records) - written}
            )

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
            self._spill(await self._send(remaining, timeout=10.0))

    async def _next_batch(self) -> list[OutgoingRecord]:
        try:
            batch = [await asyncio.wait_for(self._queue.get(), self._retry_seconds)]
        except TimeoutError:
            return []
        while len(batch) < self._max_batch and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        return batch

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
            _replayed.add(len(chunk) - len(failed))
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
                _logged.add(len(batch) - len(failed))
                if failed:
                    self._spill(failed)
