"""Prediction logs: packed per model, journaled before the request is answered, sent to
flywheel.predictions off the request path; shed (and counted) only when the journal is
full or failing."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from opentelemetry import metrics

from flywheel.gateway.v1.events_pb2 import PredictionLog, PredictionLogBatch
from flywheel_common.events import OutgoingRecord, event_type, header
from flywheel_common.prediction_logs import pack
from flywheel_common.publisher import DeliveryFailed, EventPublisher
from flywheel_gateway.journal import Journal

log = logging.getLogger(__name__)


class Shed(StrEnum):
    """Why a prediction log was dropped: its request was answered all the same."""

    JOURNAL_FULL = "journal_full"
    """The journal holds `max_bytes` of logs Kafka has not acknowledged."""
    JOURNAL_FAILED = "journal_failed"
    """Writing to the journal failed (a full or failing disk)."""
    UNBUILDABLE = "unbuildable"
    """Building the log from the request failed."""
    TOO_LARGE = "too_large"
    """One log larger than Kafka takes."""


@dataclass(frozen=True)
class LoggerMetrics:
    """The logger's instruments, from the global meter unless a test gives its own."""

    logged: metrics.Counter
    journaled: metrics.Counter
    replayed: metrics.Counter
    dropped: metrics.Counter
    fsync_ms: metrics.Histogram

    @classmethod
    def of(cls, meter: metrics.Meter) -> LoggerMetrics:
        return cls(
            logged=meter.create_counter(
                "flywheel.predictions.logged", description="Prediction logs acknowledged by Kafka"
            ),
            journaled=meter.create_counter(
                "flywheel.predictions.journaled",
                description="Prediction logs written to the disk journal",
            ),
            replayed=meter.create_counter(
                "flywheel.predictions.replayed",
                description="Prediction logs sent to Kafka from the journal on disk (after a "
                "restart, or once more were waiting than the memory holds)",
            ),
            dropped=meter.create_counter(
                "flywheel.predictions.dropped",
                description="Prediction logs shed while their requests were answered, by "
                "reason: journal_full, journal_failed, unbuildable, too_large",
            ),
            fsync_ms=meter.create_histogram(
                "flywheel.gateway.journal.fsync",
                unit="ms",
                description="Time to flush the prediction-log journal to the disk",
            ),
        )


_METRICS = LoggerMetrics.of(metrics.get_meter(__name__))


KAFKA_RECORD_LIMIT = 1024 * 1024
"""The largest record the producer and a broker with default settings accept (aiokafka's
`max_request_size`, Kafka's `message.max.bytes`)."""

Builder = Callable[[], PredictionLog]
InKafka = Callable[[datetime], Awaitable[set[str]]]
"""The event ids of the records written to flywheel.predictions since a moment."""
CLOCK_SKEW = timedelta(seconds=1)


@dataclass
class Pending:
    """A journaled record on its way to Kafka."""

    record: OutgoingRecord
    end: int
    """Its end in the journal: delivered, the journal may forget everything before."""
    logs: int
    from_disk: bool
    sent: bool = False


class PredictionLogger:
    """Journals prediction logs before their requests are answered, and sends them.

    The request path adds a function that builds its log to the current cycle, and awaits
    the cycle's one future. A task takes the cycle (every log added since it last ran),
    builds the logs, packs each model's into `PredictionLogBatch` records of at most
    `logs_per_record`, appends them to the journal in one write and lets those requests
    answer: a process killed after that loses none of their logs. The journal is flushed to
    the disk every `fsync_interval_ms` (0: before those requests answer), so a machine crash
    loses at most the logs of one interval. A task sends journaled records to Kafka in order
    and marks them delivered; when Kafka refuses a send it tries again every
    `retry_seconds`, and after a restart it starts with what the journal holds undelivered.
    A send that failed, or that a kill interrupted, may have reached Kafka all the same:
    before sending those records again, the records Kafka received since the first try
    (`in_kafka`) are marked delivered, so each is written once. At most `max_buffered` logs
    wait in memory for the journal (the request that fills a cycle journals it itself) and
    as many journaled, unsent ones; more are read back from the journal when their turn
    comes. A log is shed (its request answered all the same, the log counted in
    `flywheel.predictions.dropped` by `Shed` reason) only when the journal is full or
    failing, or the log cannot be built or sent. A record is delivered whole or not at all.
    """

    def __init__(
        self,
        publisher: EventPublisher,
        journal: Journal,
        in_kafka: InKafka,
        sample_rate: float = 1.0,
        max_buffered: int = 10_000,
        max_batch: int = 1000,
        logs_per_record: int = 200,
        retry_seconds: float = 1.0,
        fsync_interval_ms: int = 1000,
        meters: LoggerMetrics = _METRICS,
    ) -> None:
        self._publisher = publisher
        self._journal = journal
        self._in_kafka = in_kafka
        self._sample_rate = sample_rate
        self._cycle: list[Builder] = []
        self._cycle_answered: asyncio.Future[None] | None = None
        self._cycle_started = asyncio.Event()
        self._max_buffered = max_buffered
        self._max_batch = max_batch
        self._logs_per_record = logs_per_record
        self._retry_seconds = retry_seconds
        self._fsync_interval_ms = fsync_interval_ms
        self._metrics = meters
        for reason in Shed:  # exported at 0, so that an alert sees the first one shed
            meters.dropped.add(0, {"reason": reason.value})
        self._pending: deque[Pending] = deque()
        self._pending_logs = 0
        self._loaded = journal.start
        """The journal's position up to which its records are in `_pending`."""
        self._unsent = asyncio.Event()
        self._all_sent = asyncio.Event()
        self._restart_publisher = False
        self._tasks: list[asyncio.Task[None]] = []

    def log(self, prediction: Builder) -> asyncio.Future[None]:
        """Add a prediction's log to the cycle; `prediction` builds it later, in the
        logger's task. The result is done once the log is journaled (or dropped): answer
        after it. Every log of a cycle shares one result, so that a request costs the loop
        no future and no queue of its own."""
        loop = asyncio.get_running_loop()
        if self._sample_rate < 1.0 and random.random() >= self._sample_rate:
            skipped = loop.create_future()
            skipped.set_result(None)
            return skipped
        if self._cycle_answered is None:
            self._cycle_answered = loop.create_future()
        answered = self._cycle_answered
        self._cycle.append(prediction)
        if len(self._cycle) == 1:
            self._cycle_started.set()
        if len(self._cycle) >= self._max_buffered:
            # The journal is behind: this request writes the cycle itself, on the loop.
            builders, _ = self._take_cycle()
            self._journal_cycle(builders)
            if not self._fsync_interval_ms:
                self._sync_now()
            _answer(answered)
        return answered

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The long-running loop, watched by the service's supervisor."""
        return self._tasks[0] if self._tasks else None

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._supervised(), name="prediction-logger"),
        ]

    async def stop(self) -> None:
        """Journal the cycle's logs, give Kafka a moment to take what is undelivered; the
        rest waits in the journal for the next start."""
        builders, answered = self._take_cycle()
        self._journal_cycle(builders)
        self._sync_now()
        _answer(answered)
        if self._tasks:  # a sender runs: give it a moment
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._until_sent(), 10.0)
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._sync_now()
        self._journal.close()

    async def _supervised(self) -> None:
        """The loops; any ending ends this task, which the service notices."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._journal_loop())
            group.create_task(self._send_loop())
            if self._fsync_interval_ms:
                group.create_task(self._sync_loop())

    def _take_cycle(self) -> tuple[list[Builder], asyncio.Future[None] | None]:
        """The logs added since the last cycle was taken, and the future their requests
        await; the next logs start a new cycle."""
        taken = self._cycle, self._cycle_answered
        self._cycle, self._cycle_answered = [], None
        return taken

    async def _journal_loop(self) -> None:
        while True:
            await self._cycle_started.wait()
            self._cycle_started.clear()
            builders, answered = self._take_cycle()
            if not builders:  # a request that found the cycle full journaled it
                continue
            self._journal_cycle(builders)
            if not self._fsync_interval_ms:
                try:
                    await self._sync()
                except asyncio.CancelledError:  # stopping: `stop` flushes before closing
                    _answer(answered)
                    raise
            _answer(answered)

    async def _sync_loop(self) -> None:
        """Flush the journal to the disk every interval: a machine crash loses at most the
        logs of the last interval. A failed flush ends the loop, and so the service: the
        page cache can no longer be trusted to reach the disk."""
        while True:
            await asyncio.sleep(self._fsync_interval_ms / 1000)
            await self._sync()

    async def _sync(self) -> None:
        started = time.perf_counter()
        if await asyncio.to_thread(self._journal.sync):
            self._metrics.fsync_ms.record((time.perf_counter() - started) * 1000)

    def _sync_now(self) -> None:
        started = time.perf_counter()
        if self._journal.sync():
            self._metrics.fsync_ms.record((time.perf_counter() - started) * 1000)

    def _journal_cycle(self, builders: list[Builder]) -> None:
        """Build, pack and journal the logs; their requests may answer after this."""
        try:
            records = self._pack(builders)
            at = self._journal.end
            ends = self._journal.append([record for record, _ in records])
        except Exception:  # a full disk must not fail requests; their logs are lost
            log.exception("prediction logs not journaled; dropped")
            self._shed(len(builders), Shed.JOURNAL_FAILED)
            records, ends, at = [], [], -1
        self._metrics.journaled.add(sum(count for _, count in records[: len(ends)]))
        if len(ends) < len(records):
            dropped = sum(count for _, count in records[len(ends) :])
            self._shed(dropped, Shed.JOURNAL_FULL)
            log.error("prediction journal full; logs dropped", extra={"dropped": dropped})
        if ends and self._loaded == at and self._pending_logs < self._max_buffered:
            for (record, count), end in zip(records, ends, strict=False):
                self._hold(Pending(record, end, count, from_disk=False))
        if ends:
            self._unsent.set()

    def _shed(self, logs: int, reason: Shed) -> None:
        self._metrics.dropped.add(logs, {"reason": reason.value})

    def _pack(self, builders: list[Builder]) -> list[tuple[OutgoingRecord, int]]:
        logs = []
        for build in builders:
            try:
                logs.append(build())
            except Exception:  # one request's log must not stop the logging of all others
                self._shed(1, Shed.UNBUILDABLE)
                log.exception("prediction log not built; dropped")
        for log_ in logs:
            log_.sample_rate = self._sample_rate
        records = []
        for record, count in pack(
            logs, source=self._publisher.source, per_record=self._logs_per_record
        ):
            if len(record.value) > KAFKA_RECORD_LIMIT:
                # Kafka would refuse it on every try, holding up every log behind it.
                self._shed(count, Shed.TOO_LARGE)
                log.error(
                    "prediction log larger than Kafka takes; dropped",
                    extra={"bytes": len(record.value), "limit": KAFKA_RECORD_LIMIT},
                )
                continue
            records.append((record, count))
        return records

    async def _until_sent(self) -> None:
        if not self._journal.empty:
            self._all_sent.clear()
            await self._all_sent.wait()

    async def _send_loop(self) -> None:
        # Waits on the producer's own delivery timeout rather than a shorter one of ours: a
        # send given up early could still be delivered later and then be sent twice.
        while True:
            if self._journal.empty:
                self._unsent.clear()
                await self._unsent.wait()
            self._load()
            if not await self._deliver_next():
                await asyncio.sleep(self._retry_seconds)

    async def _deliver_next(self) -> bool:
        """Find out what an interrupted send left in Kafka, or else send the next records;
        False when Kafka failed."""
        since = self._journal.sending_since
        if since is not None:
            return await self._skip_what_kafka_has(since)
        return await self._send_next()

    async def _skip_what_kafka_has(self, since: datetime) -> bool:
        """Mark delivered the waiting records that Kafka received since their first send;
        False when Kafka cannot be asked yet."""
        try:
            present = await self._in_kafka(since - CLOCK_SKEW)
        except Exception as exc:
            log.warning("cannot ask Kafka what it has", extra={"error": str(exc)})
            return False
        for pending in self._pending:
            if pending.record.event_id in present:
                pending.sent = True
        self._journal.sending(None)
        self._forget_sent()
        return True

    def _load(self) -> None:
        """Read undelivered records back from the journal when memory holds none of them
        (after a restart, or when more waited than memory holds)."""
        if self._pending or self._loaded >= self._journal.end:
            return
        self._loaded = max(self._loaded, self._journal.start)
        for record, end in self._journal.read(self._loaded, self._max_batch):
            self._hold(Pending(record, end, _logs_in(record), from_disk=True))

    def _hold(self, pending: Pending) -> None:
        self._pending.append(pending)
        self._pending_logs += pending.logs
        self._loaded = pending.end

    async def _send_next(self) -> bool:
        """Send the oldest unsent records; True when Kafka took them all."""
        batch = [p for p in list(self._pending)[: self._max_batch] if not p.sent]
        if not batch:
            return True
        self._journal.sending(datetime.now(UTC))
        failed = await self._send([p.record for p in batch])
        unsent = {record.event_id for record in failed}
        for pending in batch:
            pending.sent = pending.record.event_id not in unsent
        delivered = [p for p in batch if p.sent]
        self._metrics.logged.add(sum(p.logs for p in delivered))
        self._metrics.replayed.add(sum(p.logs for p in delivered if p.from_disk))
        if not failed:
            self._journal.sending(None)
        self._forget_sent()
        return not failed

    def _forget_sent(self) -> None:
        """Drop the sent records at the head, and mark them delivered in the journal."""
        end = None
        while self._pending and self._pending[0].sent:
            sent = self._pending.popleft()
            self._pending_logs -= sent.logs
            end = sent.end
        if end is not None:
            self._journal.delivered(end)
            if self._journal.empty:
                self._all_sent.set()

    async def _send(self, records: list[OutgoingRecord]) -> list[OutgoingRecord]:
        """Send; returns the records Kafka did not acknowledge (empty when all went)."""
        try:
            if self._restart_publisher:
                await self._publisher.restart()
                self._restart_publisher = False
            await self._publisher.send(records)
        except DeliveryFailed as failure:
            self._restart_publisher = True
            log.warning("prediction logs not delivered", extra={"error": str(failure)})
            return failure.failed
        except Exception as exc:
            self._restart_publisher = True
            log.warning("prediction logs not sent", extra={"error": str(exc)})
            return records
        return []


def _answer(answered: asyncio.Future[None] | None) -> None:
    """Let the requests of a cycle whose logs were journaled (or shed) answer."""
    if answered is not None and not answered.done():
        answered.set_result(None)


def _logs_in(record: OutgoingRecord) -> int:
    """Logs in a record read back from the journal: decoded, as no count was kept."""
    if header(record.headers, "ce_type") == event_type(PredictionLog):
        return 1
    return len(PredictionLogBatch.FromString(record.value).logs)
