"""The shipper: sends the spooled prediction logs to flywheel.predictions in order, each
once, off the serving process.

It reads the next run of frames from the spool, makes them into `PredictionLogBatch`
records (per model, at most `logs_per_record` logs each), records that the run is being
sent, sends it and records it shipped. Each record's event id follows from the run
(`spool.record_id`). A send that failed may have reached Kafka all the same, and so may one
that a kill interrupted: before sending those records again, the shipper asks Kafka which
of their ids it received since the first try (`in_kafka`) and sends only the others. When
Kafka refuses a send it tries again every `retry_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from flywheel.gateway.v1.events_pb2 import PredictionLog, PredictionLogBatch
from flywheel_common.events import OutgoingRecord, event_type, header
from flywheel_common.prediction_logs import pack_encoded
from flywheel_common.publisher import DeliveryFailed
from flywheel_gateway import log_frames
from flywheel_gateway.journal import Journal
from flywheel_gateway.predictions import KAFKA_RECORD_LIMIT, Shed
from flywheel_gateway.spool import Run, SpoolReader, record_id

log = logging.getLogger(__name__)

InKafka = Callable[[datetime], Awaitable[set[str]]]
"""The event ids of the records written to flywheel.predictions since a moment."""
CLOCK_SKEW = timedelta(seconds=1)
READ_BYTES = 64 * 1024 * 1024
"""Most bytes of frames read into one run (past it only for a single frame)."""


class Publisher(Protocol):
    @property
    def source(self) -> str: ...

    async def send(self, records: Sequence[OutgoingRecord]) -> None: ...

    async def restart(self) -> None: ...


@dataclass
class ShippedCounts:
    """What the shipper did since these counts were last taken."""

    logged: int = 0
    replayed: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)

    def __bool__(self) -> bool:
        return bool(self.logged or self.replayed or +self.dropped or +self.skipped)


class Shipper:
    """Ships a spool's logs (see the module's docstring). After a run of fewer than
    `max_logs` logs (or none) it waits `poll_seconds` before it reads again: each run costs
    the process wake-ups (a few hundred microseconds of CPU each), a produce request and
    two progress records, whatever it carries, and logs are not latency-critical."""

    def __init__(
        self,
        reader: SpoolReader,
        publisher: Publisher,
        in_kafka: InKafka,
        *,
        logs_per_record: int = 200,
        max_logs: int = 10_000,
        retry_seconds: float = 1.0,
        poll_seconds: float = 0.1,
    ) -> None:
        self._reader = reader
        self._publisher = publisher
        self._in_kafka = in_kafka
        self._logs_per_record = logs_per_record
        self._max_logs = max_logs
        self._retry_seconds = retry_seconds
        self._poll_seconds = poll_seconds
        self._restart_publisher = False
        self._counts = ShippedCounts()
        self._stop_when_empty = False

    def take_counts(self) -> ShippedCounts:
        """The counts since the last call (the spool's skipped stretches among them)."""
        taken, self._counts = self._counts, ShippedCounts()
        taken.skipped = self._reader.take_skipped()
        return taken

    async def run(self) -> None:
        """Ship: first a run a stopped shipper left unfinished, then each new one; for good,
        or until the spool holds no more after `stop_when_empty`."""
        await self.finish_interrupted()
        while True:
            shipped = await self.ship_next()
            if not shipped and self._stop_when_empty:
                return
            if shipped < self._max_logs and not self._stop_when_empty:
                # Let logs gather: every run costs wake-ups, a produce request and progress
                # records, whatever it carries.
                await asyncio.sleep(self._poll_seconds)

    def stop_when_empty(self) -> None:
        """Let `run` return once everything spooled was shipped."""
        self._stop_when_empty = True

    async def finish_interrupted(self) -> None:
        sending = self._reader.sending
        if sending is not None:
            log.info(
                "prediction logs left unfinished by a stopped shipper: sending what Kafka lacks",
                extra={"since": sending.since.isoformat()},
            )
            await self._ship(self._reader.read_again(sending), sending.since, interrupted=True)

    async def ship_next(self) -> int:
        """Ship the next run of frames; how many there were (0: none)."""
        run = self._reader.read(self._max_logs, READ_BYTES)
        if run is None:
            return 0
        await self._ship(run, datetime.now(UTC), interrupted=False)
        return len(run.frames)

    async def _ship(self, run: Run, since: datetime, *, interrupted: bool) -> None:
        records = self._records(run)
        if not interrupted:
            self._reader.mark_sending(run, since)
        await self._deliver(records, since, check_first=interrupted)
        self._reader.mark_shipped(run)

    async def ship_journal(self, journal: Journal) -> None:
        """Send what the journal of an earlier release holds undelivered, once each, and
        mark it delivered."""
        since = journal.sending_since
        present = await self._received_since(since) if since is not None else set()
        if since is None:
            since = datetime.now(UTC)
            journal.sending(since)
        position = journal.start
        while chunk := journal.read(position, 1000):
            records = [
                (record, logs_in(record)) for record, _ in chunk if record.event_id not in present
            ]
            await self._deliver(records, since, check_first=False, again=bool(present))
            position = chunk[-1][1]
            journal.delivered(position)
        journal.sending(None)

    async def _deliver(
        self,
        records: list[tuple[OutgoingRecord, int]],
        since: datetime,
        *,
        check_first: bool,
        again: bool = False,
    ) -> None:
        """Send until Kafka has every record; after a failed send (or first, with
        `check_first`), only those Kafka did not receive since `since`."""
        logs_of = {record.event_id: count for record, count in records}
        pending = [record for record, _ in records]
        check = check_first
        again = again or check_first
        while pending:
            if check:
                present = await self._received_since(since)
                pending = [record for record in pending if record.event_id not in present]
                if not pending:
                    break
            failed = {record.event_id for record in await self._send(pending)}
            for record in pending:
                if record.event_id not in failed:
                    self._counts.logged += logs_of[record.event_id]
                    if again:
                        self._counts.replayed += logs_of[record.event_id]
            pending = [record for record in pending if record.event_id in failed]
            if pending:
                check = again = True
                await asyncio.sleep(self._retry_seconds)

    def _records(self, run: Run) -> list[tuple[OutgoingRecord, int]]:
        """The run's records, each with the logs it carries."""
        logs = []
        for frame in run.frames:
            try:
                logs.append((log_frames.model_of(frame), frame))
            except ValueError:
                log.exception("a spooled prediction log cannot be read; dropped")
                self._counts.dropped[Shed.UNBUILDABLE.value] += 1
        records: list[tuple[OutgoingRecord, int]] = []
        for record, count in pack_encoded(
            logs,
            source=self._publisher.source,
            per_record=self._logs_per_record,
            event_id=lambda model, part: record_id(
                self._reader.identity, run.start, run.end, model, part
            ),
        ):
            if len(record.value) > KAFKA_RECORD_LIMIT:
                # Kafka would refuse it on every try, holding up every log behind it.
                log.error(
                    "prediction log larger than Kafka takes; dropped",
                    extra={"bytes": len(record.value), "limit": KAFKA_RECORD_LIMIT},
                )
                self._counts.dropped[Shed.TOO_LARGE.value] += count
                continue
            records.append((record, count))
        return records

    async def _received_since(self, since: datetime) -> set[str]:
        """The ids Kafka received since `since`, asked until Kafka answers."""
        while True:
            try:
                return await self._in_kafka(since - CLOCK_SKEW)
            except Exception as exc:
                log.warning("cannot ask Kafka what it has", extra={"error": str(exc)})
                await asyncio.sleep(self._retry_seconds)

    async def _send(self, records: list[OutgoingRecord]) -> list[OutgoingRecord]:
        """Send; returns the records Kafka did not acknowledge (empty when all went). Waits
        on the producer's own delivery timeout rather than a shorter one of ours: a send
        given up early could still be delivered later and then be sent twice."""
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


def logs_in(record: OutgoingRecord) -> int:
    """The logs a record of flywheel.predictions carries (a batch, or one log)."""
    if header(record.headers, "ce_type") == event_type(PredictionLog):
        return 1
    return len(PredictionLogBatch.FromString(record.value).logs)
