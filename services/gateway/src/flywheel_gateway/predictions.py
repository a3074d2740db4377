"""Prediction logs on the serving side: each one spooled before its request is answered;
shed (and counted) only when the spool is full or failing. The shipper process
(`shipping`) sends them to flywheel.predictions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from opentelemetry import metrics

from flywheel_gateway.spool import SpoolWriter

log = logging.getLogger(__name__)


class Shed(StrEnum):
    """Why a prediction log was dropped: its request was answered all the same."""

    JOURNAL_FULL = "journal_full"
    """The spool holds `max_bytes` of logs Kafka has not acknowledged."""
    JOURNAL_FAILED = "journal_failed"
    """Writing to the spool failed (a full or failing disk)."""
    UNBUILDABLE = "unbuildable"
    """Building the log from the request, or its message from the spooled frame, failed."""
    TOO_LARGE = "too_large"
    """One log larger than Kafka takes."""


@dataclass(frozen=True)
class LoggerMetrics:
    """The instruments of prediction logging, from the global meter unless a test gives its
    own. The serving process adds the shipper's counts, which it reports, to its own."""

    logged: metrics.Counter
    journaled: metrics.Counter
    replayed: metrics.Counter
    dropped: metrics.Counter
    skipped: metrics.Counter
    fsync_ms: metrics.Histogram

    @classmethod
    def of(cls, meter: metrics.Meter) -> LoggerMetrics:
        return cls(
            logged=meter.create_counter(
                "flywheel.predictions.logged", description="Prediction logs acknowledged by Kafka"
            ),
            journaled=meter.create_counter(
                "flywheel.predictions.journaled",
                description="Prediction logs written to the spool on the disk",
            ),
            replayed=meter.create_counter(
                "flywheel.predictions.replayed",
                description="Prediction logs sent to Kafka again, after a send that failed or "
                "that a stopped shipper left unfinished",
            ),
            dropped=meter.create_counter(
                "flywheel.predictions.dropped",
                description="Prediction logs shed while their requests were answered, by "
                "reason: journal_full, journal_failed, unbuildable, too_large",
            ),
            skipped=meter.create_counter(
                "flywheel.gateway.journal.skipped",
                description="Stretches of the prediction-log spool skipped by its shipper: a "
                "torn tail (reason torn_tail) or damaged frames (damaged)",
            ),
            fsync_ms=meter.create_histogram(
                "flywheel.gateway.journal.fsync",
                unit="ms",
                description="Time to flush the prediction-log spool to the disk",
            ),
        )


METRICS = LoggerMetrics.of(metrics.get_meter(__name__))
SKIPPED = ("torn_tail", "damaged")
"""Why the shipper skipped a stretch of the spool (`spool.SpoolReader`)."""


KAFKA_RECORD_LIMIT = 1024 * 1024
"""The largest record the producer and a broker with default settings accept (aiokafka's
`max_request_size`, Kafka's `message.max.bytes`)."""
LOG_LIMIT = KAFKA_RECORD_LIMIT - 4096
"""The largest log frame spooled: its record's headers and framing need the rest."""

FrameBuilder = Callable[[], bytes]
"""Encodes one prediction's log (`log_frames.encode`)."""


class PredictionLogger:
    """Spools prediction logs before their requests are answered.

    `log` encodes a prediction's log on the request path. The logs of the requests that
    answer in one turn of the event loop are appended to the spool together, with one write
    into the page cache, before any of them answers: a process killed after an answer loses
    none of the logs of answered requests, and the write is paid once per turn, not once per
    request. The spool is flushed to the disk every `fsync_interval_ms` (0: before
    the request answers, one flush for all the logs written meanwhile), so a machine crash
    loses at most the logs of one interval. A log is shed (its request answered all the
    same, the log counted in `flywheel.predictions.dropped` by `Shed` reason) only when the
    spool is full or failing, or the log cannot be encoded or is larger than Kafka takes.

    Counts go to the metrics once per interval: an OpenTelemetry counter costs about 20 us a
    call, a tenth of what spooling a log costs.
    """

    def __init__(
        self,
        spool: SpoolWriter,
        sample_rate: float = 1.0,
        fsync_interval_ms: int = 1000,
        meters: LoggerMetrics = METRICS,
    ) -> None:
        self._spool = spool
        self._sample_rate = sample_rate
        self._fsync_interval_ms = fsync_interval_ms
        self._metrics = meters
        self._journaled = 0
        self._dropped: Counter[Shed] = Counter()
        # Exported at 0, so that an alert sees the first one shed or skipped.
        for reason in Shed:
            meters.dropped.add(0, {"reason": reason.value})
        for skipped in SKIPPED:
            meters.skipped.add(0, {"reason": skipped})
        self._turn: list[bytes] = []
        """Logs encoded in this turn of the loop, to be written together."""
        self._written: asyncio.Future[None] | None = None
        """What the requests of this turn await: their logs written."""
        self._synced: asyncio.Future[None] | None = None
        """What the requests waiting for the next flush await (no interval only)."""
        self._sync_wanted = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def sample_rate(self) -> float:
        return self._sample_rate

    def sampled(self) -> bool:
        """Whether this request's prediction is logged (`sample_rate` of them)."""
        return self._sample_rate >= 1.0 or random.random() < self._sample_rate

    def log(self, encode: FrameBuilder) -> asyncio.Future[None] | None:
        """Encode a prediction's log for the spool; its request may answer once the future
        returned is done (the log is in the spool, or on the disk with no flush interval).
        None when the log was shed at once: the request need not wait."""
        try:
            frame = encode()
        except Exception:  # one request's log must not fail its request
            log.exception("prediction log not built; dropped")
            self.shed(1, Shed.UNBUILDABLE)
            return None
        if len(frame) > LOG_LIMIT:
            # Kafka would refuse its record on every try, holding up every log behind it.
            log.error(
                "prediction log larger than Kafka takes; dropped",
                extra={"bytes": len(frame), "limit": LOG_LIMIT},
            )
            self.shed(1, Shed.TOO_LARGE)
            return None
        self._turn.append(frame)
        if self._written is None:
            loop = asyncio.get_running_loop()
            self._written = loop.create_future()
            # After the callbacks already due: the logs of every request that answers in
            # this turn of the loop go in one write.
            loop.call_soon(self._write_turn)
        return self._written

    def _write_turn(self) -> None:
        """Write the logs gathered in this turn of the loop with one write, then let their
        requests answer (after the flush, with no flush interval)."""
        frames, self._turn = self._turn, []
        written, self._written = self._written, None
        if written is None:  # written already, by `stop`
            return
        try:
            spooled = self._spool.append_all(frames)
        except Exception:  # a full or failing disk, say: their requests answer all the same
            log.exception("prediction logs not spooled; dropped", extra={"logs": len(frames)})
            self.shed(len(frames), Shed.JOURNAL_FAILED)
            spooled = 0
        if spooled < len(frames):
            self.shed(len(frames) - spooled, Shed.JOURNAL_FULL)
        self._journaled += spooled
        if self._fsync_interval_ms or not spooled:
            written.set_result(None)
            return
        if self._synced is None:
            self._synced = asyncio.get_running_loop().create_future()
            self._sync_wanted.set()
        self._synced.add_done_callback(lambda _: _resolve(written))

    def shed(self, logs: int, reason: Shed) -> None:
        """Count logs shed; a full spool logs once per interval, not once per request."""
        if reason is Shed.JOURNAL_FULL and not self._dropped[reason]:
            log.error("prediction spool full; logs dropped until the shipper catches up")
        self._dropped[reason] += logs

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The flushing loop, watched by the service's supervisor."""
        return self._task

    async def start(self) -> None:
        self._task = asyncio.create_task(
            self._sync_loop() if self._fsync_interval_ms else self._sync_on_demand(),
            name="prediction-spool-sync",
        )

    async def stop(self) -> None:
        """Flush and close the spool; the shipper sends what it holds."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._write_turn()
        self._sync_now()
        self._answer_synced()
        self._publish_counts()
        self._spool.close()

    async def _sync_loop(self) -> None:
        """Flush the spool every interval: a machine crash loses at most the logs of the
        last interval. A failed flush ends the loop, and so the service: the page cache can
        no longer be trusted to reach the disk."""
        while True:
            await asyncio.sleep(self._fsync_interval_ms / 1000)
            await self._sync()
            self._publish_counts()

    async def _sync_on_demand(self) -> None:
        """Flush whenever requests wait for it; the requests of one flush answer together."""
        published = time.monotonic()
        while True:
            await self._sync_wanted.wait()
            self._sync_wanted.clear()
            waiting, self._synced = self._synced, None
            try:
                await self._sync()
            finally:
                if waiting is not None:
                    _resolve(waiting)
            if time.monotonic() - published >= 1.0:
                self._publish_counts()
                published = time.monotonic()

    async def _sync(self) -> None:
        started = time.perf_counter()
        if await asyncio.to_thread(self._spool.sync):
            self._metrics.fsync_ms.record((time.perf_counter() - started) * 1000)

    def _sync_now(self) -> None:
        started = time.perf_counter()
        if self._spool.sync():
            self._metrics.fsync_ms.record((time.perf_counter() - started) * 1000)

    def _answer_synced(self) -> None:
        waiting, self._synced = self._synced, None
        if waiting is not None:
            _resolve(waiting)

    def _publish_counts(self) -> None:
        if self._journaled:
            self._metrics.journaled.add(self._journaled)
            self._journaled = 0
        for reason, count in self._dropped.items():
            if count:
                self._metrics.dropped.add(count, {"reason": reason.value})
        self._dropped.clear()


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
