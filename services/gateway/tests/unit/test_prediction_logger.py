"""Each prediction log is written once: spooled before its request is answered, shipped to
Kafka after, and not sent twice when a failed send or a kill mid-send left it in Kafka."""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from flywheel.gateway.v1.events_pb2 import PredictionLog, PredictionLogBatch
from flywheel_common.event_loop import EventLoop
from flywheel_common.events import OutgoingRecord
from flywheel_common.prediction_logs import pack
from flywheel_common.publisher import DeliveryFailed
from flywheel_common.timestamps import duration, epoch
from flywheel_gateway import spool
from flywheel_gateway.app import shipper_config
from flywheel_gateway.journal import Journal
from flywheel_gateway.predictions import LOG_LIMIT, LoggerMetrics, PredictionLogger
from flywheel_gateway.settings import GatewaySettings
from flywheel_gateway.shipper import ShipperConfig
from flywheel_gateway.shipper_process import restart_delay
from flywheel_gateway.shipping import Shipper
from flywheel_gateway.spool import SpoolReader, SpoolWriter


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
        self.asked = 0
        self.handed: list[OutgoingRecord] = []
        """The records of the last send."""

    async def send(self, records: Sequence[OutgoingRecord]) -> None:
        self.handed = list(records)
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
        self.asked += 1
        return {record.event_id for record in self.topic}

    def logs(self) -> Counter[str]:
        return Counter(
            log.request_id
            for record in self.topic
            for log in PredictionLogBatch.FromString(record.value).logs
        )


def prediction(request_id: str, model: str = "iris") -> PredictionLog:
    return PredictionLog(
        request_id=request_id,
        model=model,
        version=1,
        latency=duration(0.002),
        received_at=epoch(1_765_000_000.5),
    )


def frame_of(request_id: str, model: str = "iris") -> bytes:
    return prediction(request_id, model).SerializeToString()


def shipper(kafka: Kafka, directory: Path, **options: int) -> Shipper:
    return Shipper(SpoolReader(directory), kafka, kafka.has, retry_seconds=0.01, **options)


async def shipped(kafka: Kafka, directory: Path) -> None:
    """Ship everything the spool holds, as a shipper process does before it exits."""
    running = shipper(kafka, directory)
    running.stop_when_empty()
    async with asyncio.timeout(10):
        await running.run()


def spool_with(directory: Path, ids: list[str]) -> None:
    writer = SpoolWriter(directory, 1 << 20)
    for request_id in ids:
        assert writer.append(frame_of(request_id))
    writer.close()


async def test_a_log_is_in_the_spool_when_what_log_returns_is_done(tmp_path: Path) -> None:
    running = PredictionLogger(SpoolWriter(tmp_path, 1 << 20))
    await running.start()
    written = running.log(lambda: frame_of("r-1"))
    assert written is not None
    await written  # the request answers now
    # What a process killed now leaves behind, read by another process's shipper:
    left = SpoolReader(tmp_path)
    run = left.read(10, 1 << 20)
    assert run is not None
    assert run.frames == [frame_of("r-1")]
    left.close()
    await running.stop()


async def test_logs_reach_kafka_once_each_in_order_per_model(tmp_path: Path) -> None:
    ids = [f"r-{n}" for n in range(30)]
    writer = SpoolWriter(tmp_path, 1 << 20)
    for n, request_id in enumerate(ids):
        writer.append(frame_of(request_id, model="iris" if n % 3 else "wine"))
    writer.close()
    kafka = Kafka()
    await shipped(kafka, tmp_path)
    assert kafka.logs() == {request_id: 1 for request_id in ids}
    by_model: dict[str, list[str]] = {}
    for record in kafka.topic:
        for log in PredictionLogBatch.FromString(record.value).logs:
            by_model.setdefault(log.model, []).append(log.request_id)
    assert by_model["wine"] == [ids[n] for n in range(0, 30, 3)]
    assert by_model["iris"] == [ids[n] for n in range(30) if n % 3]


async def test_a_failed_send_that_reached_kafka_is_not_sent_again(tmp_path: Path) -> None:
    spool_with(tmp_path, ["r-1", "r-2"])
    kafka = Kafka(failures=1, lands=True)
    await shipped(kafka, tmp_path)
    assert kafka.logs() == {"r-1": 1, "r-2": 1}


async def test_a_failed_send_that_did_not_reach_kafka_is_sent_again(tmp_path: Path) -> None:
    spool_with(tmp_path, ["r-1", "r-2"])
    kafka = Kafka(failures=2, lands=False)
    await shipped(kafka, tmp_path)
    assert kafka.logs() == {"r-1": 1, "r-2": 1}


async def test_after_a_kill_mid_send_only_what_kafka_lacks_is_sent(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, 1 << 20)
    for request_id, model in [("r-1", "iris"), ("r-2", "wine"), ("r-3", "iris")]:
        writer.append(frame_of(request_id, model))
    kafka = Kafka()
    kafka.paused.clear()  # the send hangs: the shipper is killed in it
    killed = shipper(kafka, tmp_path)
    sending = asyncio.create_task(killed.ship_next())
    async with asyncio.timeout(10):
        while not kafka.handed:
            await asyncio.sleep(0.01)
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    assert len(kafka.handed) == 2  # a record per model, the first of them written already:
    kafka.topic.append(kafka.handed[0])
    SpoolReader.close(killed._reader)  # the operating system releases the killed one's lock
    kafka.paused.set()
    writer.append(frame_of("r-4"))
    writer.close()
    asked = kafka.asked
    await shipped(kafka, tmp_path)
    assert kafka.logs() == {"r-1": 1, "r-2": 1, "r-3": 1, "r-4": 1}
    assert kafka.asked == asked + 1


async def test_with_no_fsync_interval_an_answer_waits_until_its_log_is_on_disk(
    tmp_path: Path,
) -> None:
    flushed: list[int] = []

    class Flushes(SpoolWriter):
        def sync(self) -> bool:
            flushed.append(self.size_bytes)
            return super().sync()

    running = PredictionLogger(Flushes(tmp_path, 1 << 20), fsync_interval_ms=0)
    await running.start()
    try:
        for request_id in ("r-1", "r-2"):
            on_disk = running.log(lambda request_id=request_id: frame_of(request_id))
            assert on_disk is not None
            assert not on_disk.done()
            await on_disk
            assert flushed[-1] == running._spool.size_bytes
        together = [running.log(lambda n=n: frame_of(f"r-{n}")) for n in range(3, 6)]
        assert len({id(waiting) for waiting in together}) == 1  # one flush for all three
        await together[0]  # type: ignore[misc]
    finally:
        await running.stop()


async def test_the_logs_of_one_turn_of_the_loop_are_written_together_before_any_answer(
    tmp_path: Path,
) -> None:
    writes: list[int] = []

    class CountsWrites(SpoolWriter):
        def append_all(self, bodies: list[bytes]) -> int:
            writes.append(len(bodies))
            return super().append_all(bodies)

    running = PredictionLogger(CountsWrites(tmp_path, 1 << 20))
    await running.start()
    try:
        together = [running.log(lambda n=n: frame_of(f"r-{n}")) for n in range(5)]
        assert len({id(waiting) for waiting in together}) == 1
        assert together[0] is not None
        assert not together[0].done()
        assert writes == []  # no answer may leave before the write
        await together[0]
        assert writes == [5]
        then = running.log(lambda: frame_of("r-5"))
        assert then is not None
        assert then is not together[0]
        await then
        assert writes == [5, 1]
    finally:
        await running.stop()
    kafka = Kafka()
    await shipped(kafka, tmp_path)
    assert kafka.logs() == {f"r-{n}": 1 for n in range(6)}


async def test_with_an_fsync_interval_the_spool_reaches_the_disk_after_the_answer(
    tmp_path: Path,
) -> None:
    flushed = asyncio.Event()

    class Flushes(SpoolWriter):
        def sync(self) -> bool:
            synced = super().sync()
            if synced:
                flushed.set()
            return synced

    running = PredictionLogger(Flushes(tmp_path, 1 << 20), fsync_interval_ms=20)
    await running.start()
    try:
        written = running.log(lambda: frame_of("r-1"))
        assert written is not None
        await written
        assert not flushed.is_set()  # answered before the flush
        async with asyncio.timeout(10):
            await flushed.wait()
    finally:
        await running.stop()


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


async def test_logs_shed_are_counted_by_reason_and_their_requests_answered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "_ROOM_CHECK_SECONDS", 0.0)
    reader = InMemoryMetricReader()
    meters = LoggerMetrics.of(MeterProvider(metric_readers=[reader]).get_meter("test"))
    size = len(spool.framing.frame(frame_of("r-0")))
    running = PredictionLogger(SpoolWriter(tmp_path, max_bytes=3 * size + size // 2), meters=meters)
    await running.start()

    def unbuildable() -> bytes:
        raise ValueError("a tensor the frame cannot hold")

    try:
        for turn in ([0, 1], [2, 3, 4], [5], [6, 7, 8, 9]):  # room for three logs
            await asyncio.gather(*(running.log(lambda n=n: frame_of(f"r-{n}")) for n in turn))  # type: ignore[misc]
        assert running.log(unbuildable) is None
        assert running.log(lambda: b"x" * (LOG_LIMIT + 1)) is None
    finally:
        await running.stop()
    dropped = counted(reader, "flywheel.predictions.dropped")
    assert {reason: count for reason, count in dropped.items() if count} == {
        "journal_full": 7,
        "unbuildable": 1,
        "too_large": 1,
    }
    assert set(dropped) == {"journal_full", "journal_failed", "unbuildable", "too_large"}
    assert counted(reader, "flywheel.predictions.journaled") == {"": 3}
    kafka = Kafka()
    await shipped(kafka, tmp_path)
    assert kafka.logs() == {"r-0": 1, "r-1": 1, "r-2": 1}


async def test_a_spooled_log_that_cannot_be_read_is_dropped_and_the_rest_shipped(
    tmp_path: Path,
) -> None:
    writer = SpoolWriter(tmp_path, 1 << 20)
    writer.append(frame_of("r-1"))
    writer.append(b"\x09 a frame of a format this shipper does not read")
    writer.append(frame_of("r-2"))
    writer.close()
    kafka = Kafka()
    running = shipper(kafka, tmp_path)
    running.stop_when_empty()
    await running.run()
    assert kafka.logs() == {"r-1": 1, "r-2": 1}
    counts = running.take_counts()
    assert (counts.logged, dict(counts.dropped)) == (2, {"unbuildable": 1})


async def test_what_an_earlier_release_journaled_is_sent_once_then_forgotten(
    tmp_path: Path,
) -> None:
    records = [record for record, _ in pack([prediction("r-1"), prediction("r-2")], source="g")]
    records += [record for record, _ in pack([prediction("r-3")], source="g")]
    journal = Journal(tmp_path / "j", 1 << 20)
    journal.append(records)
    journal.sending(datetime.now(UTC))  # killed mid-send: the first record reached Kafka
    kafka = Kafka()
    kafka.topic.append(records[0])
    running = shipper(kafka, tmp_path / "spool")
    await running.ship_journal(journal)
    assert journal.empty
    assert journal.sending_since is None
    assert kafka.logs() == {"r-1": 1, "r-2": 1, "r-3": 1}
    assert running.take_counts().logged == 1


def test_a_shipper_failing_at_its_start_is_started_less_and_less_often() -> None:
    delays = [1.0]
    for _ in range(7):
        delays.append(restart_delay(delays[-1], 1.0, status=1, lived=0.5))
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert restart_delay(30.0, 1.0, status=1, lived=60.0) == 1.0  # it had worked a while
    assert restart_delay(30.0, 1.0, status=-9, lived=0.5) == 1.0  # killed: start it again


@pytest.mark.parametrize("choice", list(EventLoop))
def test_the_shipper_runs_on_the_event_loop_its_serving_process_runs_on(
    choice: EventLoop,
) -> None:
    config = shipper_config(GatewaySettings(event_loop=choice))
    received = ShipperConfig.read(io.BytesIO(config.encoded()))
    assert received.event_loop is choice
