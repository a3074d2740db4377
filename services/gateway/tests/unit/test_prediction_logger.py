"""Each prediction log is written once: journaled before its request is answered, sent to
Kafka after, and not sent twice when a failed send or a kill mid-send left it in Kafka."""

from __future__ import annotations

import asyncio
import shutil
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from flywheel.gateway.v1.events_pb2 import PredictionLog, PredictionLogBatch
from flywheel_common.events import OutgoingRecord
from flywheel_common.prediction_logs import pack
from flywheel_common.publisher import DeliveryFailed
from flywheel_gateway.journal import HEADER_BYTES, Journal, _frame
from flywheel_gateway.predictions import LoggerMetrics, PredictionLogger


class Kafka:
    """A publisher and the topic behind it. A failing send writes its records or not
    (`lands`), and acknowledges none; `paused` holds every send until it is set."""

    source = "flywheel-gateway"

    def __init__(self, failures: int = 0, lands: bool = False) -> None:
        self.topic: list[OutgoingRecord] = []
        self.failures = failures
        self.lands = lands
        self.paused = asyncio.Event()
        self.paused.set()

    async def send(self, records: Sequence[OutgoingRecord]) -> None:
        await self.paused.wait()
        if self.failures:
            self.failures -= 1
            if self.lands:
                self.topic.extend(records)
            raise DeliveryFailed(list(records), TimeoutError("no acknowledgement"))
        self.topic.extend(records)

    async def restart(self) -> None:
        return None

    async def has(self, since: datetime) -> set[str]:
        return {record.event_id for record in self.topic}

    def logs(self) -> Counter[str]:
        return Counter(
            log.request_id
            for record in self.topic
            for log in PredictionLogBatch.FromString(record.value).logs
        )


def prediction(request_id: str) -> PredictionLog:
    return PredictionLog(request_id=request_id, model="iris", version=1)


def logger(kafka: Kafka, journal: Journal) -> PredictionLogger:
    return PredictionLogger(cast(Any, kafka), journal, kafka.has, retry_seconds=0.01)


async def logged(kafka: Kafka, journal: Journal, ids: list[str]) -> None:
    """Log `ids` and wait until the journal has delivered everything."""
    running = logger(kafka, journal)
    await running.start()
    try:
        await asyncio.gather(*(running.log(lambda i=i: prediction(i)) for i in ids))
        async with asyncio.timeout(10):
            while not journal.empty:
                await asyncio.sleep(0.01)
    finally:
        await running.stop()


async def test_an_answer_waits_until_its_log_is_journaled(tmp_path: Path) -> None:
    kafka = Kafka()
    kafka.paused.clear()  # nothing reaches Kafka
    running = logger(kafka, Journal(tmp_path / "j", 1 << 20))
    await running.start()
    try:
        await running.log(lambda: prediction("r-1"))
        # What a process killed now leaves behind:
        shutil.copyfile(tmp_path / "j", tmp_path / "left")
        [record] = list(Journal(tmp_path / "left", 1 << 20).records())
        assert [log.request_id for log in PredictionLogBatch.FromString(record.value).logs] == [
            "r-1"
        ]
    finally:
        kafka.paused.set()
        await running.stop()
    assert kafka.logs() == {"r-1": 1}


async def test_a_failed_send_that_reached_kafka_is_not_sent_again(tmp_path: Path) -> None:
    kafka = Kafka(failures=1, lands=True)
    await logged(kafka, Journal(tmp_path / "j", 1 << 20), ["r-1", "r-2"])
    assert kafka.logs() == {"r-1": 1, "r-2": 1}


async def test_a_failed_send_that_did_not_reach_kafka_is_sent_again(tmp_path: Path) -> None:
    kafka = Kafka(failures=2, lands=False)
    await logged(kafka, Journal(tmp_path / "j", 1 << 20), ["r-1", "r-2"])
    assert kafka.logs() == {"r-1": 1, "r-2": 1}


async def test_after_a_kill_mid_send_only_what_kafka_lacks_is_sent(tmp_path: Path) -> None:
    records = [record for record, _ in pack([prediction("r-1"), prediction("r-2")], source="g")]
    records += [record for record, _ in pack([prediction("r-3")], source="g")]
    killed = Journal(tmp_path / "j", 1 << 20)
    killed.append(records)
    killed.sending(datetime.now(UTC))
    kafka = Kafka()
    kafka.topic.append(records[0])  # written, killed before the acknowledgement
    killed.close()  # the operating system releases its lock
    restarted = Journal(tmp_path / "j", 1 << 20)
    await logged(kafka, restarted, [])
    assert kafka.logs() == {"r-1": 1, "r-2": 1, "r-3": 1}
    assert restarted.sending_since is None


class Flushes(Journal):
    """A journal that remembers how far it was flushed to the disk."""

    flushed_to = 0

    def sync(self) -> bool:
        flushed = super().sync()
        self.flushed_to = self.end
        return flushed


async def test_with_no_fsync_interval_an_answer_waits_until_its_log_is_on_disk(
    tmp_path: Path,
) -> None:
    kafka = Kafka()
    kafka.paused.clear()
    journal = Flushes(tmp_path / "j", 1 << 20)
    running = PredictionLogger(cast(Any, kafka), journal, kafka.has, fsync_interval_ms=0)
    await running.start()
    try:
        for request_id in ("r-1", "r-2"):
            await running.log(lambda request_id=request_id: prediction(request_id))
            assert journal.flushed_to == journal.end > journal.start
    finally:
        kafka.paused.set()
        await running.stop()


async def test_with_an_fsync_interval_the_journal_reaches_the_disk_after_the_answer(
    tmp_path: Path,
) -> None:
    kafka = Kafka()
    kafka.paused.clear()
    journal = Flushes(tmp_path / "j", 1 << 20)
    running = PredictionLogger(cast(Any, kafka), journal, kafka.has, fsync_interval_ms=20)
    await running.start()
    try:
        await running.log(lambda: prediction("r-1"))
        written = journal.end
        async with asyncio.timeout(10):
            while journal.flushed_to < written:
                await asyncio.sleep(0.01)
    finally:
        kafka.paused.set()
        await running.stop()


async def test_logs_shed_when_the_journal_is_full_are_counted(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    meters = LoggerMetrics.of(MeterProvider(metric_readers=[reader]).get_meter("test"))
    kafka = Kafka()
    kafka.paused.clear()  # Kafka takes nothing: the journal fills up
    [(record, _)] = pack([prediction("r-0")], source=kafka.source)
    frame = len(_frame(record))  # give or take a few bytes
    journal = Journal(tmp_path / "j", max_bytes=HEADER_BYTES + 3 * frame + frame // 2)
    running = PredictionLogger(cast(Any, kafka), journal, kafka.has, meters=meters)
    await running.start()
    try:
        for n in range(10):  # one at a time: a record each
            await running.log(lambda n=n: prediction(f"r-{n}"))
    finally:
        kafka.paused.set()
        await running.stop()
    # Every request was answered; the logs past the journal's bound were shed and counted.
    assert kafka.logs() == {"r-0": 1, "r-1": 1, "r-2": 1}
    dropped = counted(reader, "flywheel.predictions.dropped")
    assert {reason: count for reason, count in dropped.items() if count} == {"journal_full": 7}
    assert set(dropped) == {"journal_full", "journal_failed", "unbuildable", "too_large"}
    assert counted(reader, "flywheel.predictions.journaled") == {"": 3}


def counted(reader: InMemoryMetricReader, name: str) -> dict[str, int]:
    """A counter's values by their `reason` ("" when it has none)."""
    data = reader.get_metrics_data()
    found: dict[str, int] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        reason = str((point.attributes or {}).get("reason", ""))
                        found[reason] = int(point.value)  # type: ignore[union-attr]
    return found


async def test_stopping_journals_every_queued_log_once_and_answers_it(tmp_path: Path) -> None:
    kafka = Kafka()
    kafka.paused.clear()
    journal = Journal(tmp_path / "j", 1 << 20)
    running = PredictionLogger(cast(Any, kafka), journal, kafka.has, max_batch=2)
    waiting = [running.log(lambda n=n: prediction(f"r-{n}")) for n in range(5)]  # not started
    await running.stop()
    assert all(done.done() for done in waiting)
    journaled = Counter(
        log.request_id
        for record in Journal(tmp_path / "j", 1 << 20).records()
        for log in PredictionLogBatch.FromString(record.value).logs
    )
    assert journaled == {f"r-{n}": 1 for n in range(5)}


async def test_logs_past_the_memory_bound_are_journaled_by_their_request_not_dropped(
    tmp_path: Path,
) -> None:
    kafka = Kafka()
    journal = Journal(tmp_path / "j", 1 << 20)
    running = PredictionLogger(cast(Any, kafka), journal, kafka.has, max_buffered=2)
    # The logger's task is not running: the request that fills a cycle journals it.
    waiting = [running.log(lambda n=n: prediction(f"r-{n}")) for n in range(5)]
    assert [done.done() for done in waiting] == [True, True, True, True, False]
    overflowed = Counter(
        log.request_id
        for record in journal.records()
        for log in PredictionLogBatch.FromString(record.value).logs
    )
    assert overflowed == {f"r-{n}": 1 for n in range(4)}
    await running.stop()
    assert waiting[-1].done()
    journaled = Counter(
        log.request_id
        for record in Journal(tmp_path / "j", 1 << 20).records()
        for log in PredictionLogBatch.FromString(record.value).logs
    )
    assert journaled == {f"r-{n}": 1 for n in range(5)}
