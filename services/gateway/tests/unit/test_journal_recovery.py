"""A journal file cut short or damaged on disk: opening it keeps every record whose checksum
holds, cuts a torn tail, skips damaged records, and counts both."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from flywheel_common.events import OutgoingRecord
from flywheel_gateway import journal as journal_module
from flywheel_gateway.journal import FRAME_OVERHEAD, HEADER_BYTES, Journal, _frame


def record(n: int) -> OutgoingRecord:
    return OutgoingRecord(
        topic="flywheel.predictions",
        key=b"iris",
        value=f"payload-{n}".encode() * 3,
        headers=[("ce_id", f"id-{n}".encode())],
    )


class Opened:
    """A journal opened with a meter of its own, to read what it counted."""

    def __init__(self, path: Path) -> None:
        self.reader = InMemoryMetricReader()
        meter = MeterProvider(metric_readers=[self.reader]).get_meter("test")
        self.journal = Journal(path, max_bytes=1_000_000, meter=meter)

    def skipped(self) -> dict[str, int]:
        data = self.reader.get_metrics_data()
        counts: dict[str, int] = {}
        for resource in data.resource_metrics if data else []:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if metric.name == "flywheel.gateway.journal.skipped":
                        for point in metric.data.data_points:
                            counts[str(point.attributes["reason"])] = int(point.value)  # type: ignore[attr-defined,index]
        return counts


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, list[int]]:
    """A journal of records 0 to 4, none delivered, and where each record ends."""
    journal = Journal(tmp_path / "j", max_bytes=1_000_000)
    ends = journal.append([record(n) for n in range(5)])
    journal.close()
    return tmp_path / "j", ends


def test_a_torn_tail_is_cut_and_counted_and_the_journal_goes_on(
    written: tuple[Path, list[int]],
) -> None:
    path, ends = written
    whole = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(ends[4] - 7)  # killed while writing record 4
    opened = Opened(path)
    assert list(opened.journal.records()) == [record(n) for n in range(4)]
    assert opened.journal.recovery.torn_tail_bytes == ends[4] - 7 - ends[3]
    assert opened.skipped() == {"torn_tail": 1}
    assert path.stat().st_size == ends[3]  # cut on disk too
    opened.journal.append([record(9)])
    opened.journal.close()
    again = Opened(path)
    assert list(again.journal.records()) == [*(record(n) for n in range(4)), record(9)]
    assert again.skipped() == {}
    assert whole > ends[3]


def test_zeros_a_machine_crash_left_at_the_end_are_a_torn_tail(
    written: tuple[Path, list[int]],
) -> None:
    path, _ = written
    with path.open("ab") as handle:
        handle.write(bytes(4096))  # the file grew, its blocks were never written
    opened = Opened(path)
    assert list(opened.journal.records()) == [record(n) for n in range(5)]
    assert opened.journal.recovery.torn_tail_bytes == 4096
    assert opened.skipped() == {"torn_tail": 1}


@pytest.mark.parametrize("where", ["body", "length", "marker"])
def test_a_damaged_record_in_the_middle_is_skipped_and_counted(
    written: tuple[Path, list[int]], where: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "COPY_CHUNK", 7)  # the rewrite copies in pieces
    path, ends = written
    start = ends[1]  # record 2 starts where record 1 ends
    offset = {"body": start + FRAME_OVERHEAD + 5, "length": start + 4, "marker": start}[where]
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
    opened = Opened(path)
    assert list(opened.journal.records()) == [record(n) for n in (0, 1, 3, 4)]
    assert opened.journal.recovery.damaged_stretches == 1
    assert opened.journal.recovery.damaged_bytes == ends[2] - ends[1]
    assert opened.skipped() == {"damaged": 1}
    opened.journal.close()
    assert list(Opened(path).journal.records()) == [record(n) for n in (0, 1, 3, 4)]


def test_a_damaged_header_sends_every_record_again(written: tuple[Path, list[int]]) -> None:
    path, ends = written
    journal = Journal(path, max_bytes=1_000_000)
    journal.delivered(ends[1])
    journal.close()
    data = bytearray(path.read_bytes())
    data[6] ^= 0xFF  # inside the delivered offset
    path.write_bytes(bytes(data))
    opened = Opened(path)
    # Nothing says what was delivered: sent twice rather than lost.
    assert list(opened.journal.records()) == [record(n) for n in range(5)]
    assert opened.journal.recovery.header_damaged
    assert opened.skipped() == {"header": 1}


def test_delivered_records_are_not_checked_again(written: tuple[Path, list[int]]) -> None:
    path, ends = written
    journal = Journal(path, max_bytes=1_000_000)
    journal.delivered(ends[1])
    journal.close()
    data = bytearray(path.read_bytes())
    data[HEADER_BYTES + FRAME_OVERHEAD + 1] ^= 0xFF  # inside record 0, delivered
    path.write_bytes(bytes(data))
    opened = Opened(path)
    assert list(opened.journal.records()) == [record(n) for n in range(2, 5)]
    assert opened.skipped() == {}


def _older_frames(records: list[OutgoingRecord]) -> bytes:
    """Frames as the journal wrote them before checksums: a length, then the same body."""
    bodies = [_frame(each)[FRAME_OVERHEAD:] for each in records]
    return b"".join(struct.pack("<I", len(body)) + body for body in bodies)


def test_a_journal_of_the_older_format_is_read_and_rewritten(tmp_path: Path) -> None:
    frames = _older_frames([record(n) for n in range(3)])
    (tmp_path / "headerless").write_bytes(frames)
    assert list(Journal(tmp_path / "headerless", 10_000).records()) == [record(n) for n in range(3)]
    first = len(_older_frames([record(0)]))
    header = struct.pack("<4sQQ", b"FWJ1", 20 + first, 0)  # record 0 was delivered
    (tmp_path / "v1").write_bytes(header + frames)
    reopened = Journal(tmp_path / "v1", 10_000)
    assert list(reopened.records()) == [record(1), record(2)]
    assert (tmp_path / "v1").read_bytes()[:4] == b"FWJ2"
