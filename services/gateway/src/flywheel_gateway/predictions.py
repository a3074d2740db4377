"""Prediction logs: off the request path, in batches, to flywheel.predictions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random

from opentelemetry import metrics

from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.events import OutgoingRecord
from flywheel_common.publisher import EventPublisher
from flywheel_common.topics import PREDICTIONS

log = logging.getLogger(__name__)
_meter = metrics.get_meter(__name__)
_logged = _meter.create_counter(
    "flywheel.predictions.logged", description="Logs acknowledged by Kafka"
)
_dropped = _meter.create_counter(
    "flywheel.predictions.dropped", description="Logs dropped because the buffer was full"
)


class PredictionLogger:
    """Buffers prediction logs and publishes them in batches from a background task.

    The request path only encodes and enqueues; a full buffer drops (and counts) rather than
    slowing callers. Sends that fail are retried, in order, until Kafka takes them.
    """

    def __init__(
        self,
        publisher: EventPublisher,
        sample_rate: float = 1.0,
        max_buffered: int = 100_000,
        max_batch: int = 1000,
    ) -> None:
        self._publisher = publisher
        self._sample_rate = sample_rate
        self._queue: asyncio.Queue[OutgoingRecord] = asyncio.Queue(max_buffered)
        self._max_batch = max_batch
        self._task: asyncio.Task[None] | None = None

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
            _dropped.add(1, {"model": prediction.model})

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="prediction-logger")

    async def stop(self) -> None:
        """Flush what is buffered (bounded by the publisher's timeouts), then stop."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        remaining = []
        while not self._queue.empty():
            remaining.append(self._queue.get_nowait())
        if remaining:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._publisher.send(remaining), 10)

    async def _run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < self._max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            while True:
                try:
                    await self._publisher.send(batch)
                    _logged.add(len(batch))
                    break
                except Exception as exc:
                    log.warning("prediction logs not sent; retrying", extra={"error": str(exc)})
                    await asyncio.sleep(1.0)
