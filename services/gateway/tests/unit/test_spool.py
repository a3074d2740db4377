"""The spool between the serving process and its shipper: every frame written is read once,
in order, across segments, restarts of either end, torn tails and damage; the spool stays
within its bytes; a run being sent is read again whole after a restart."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from flywheel_gateway import spool
from flywheel_gateway.framing import InUse
from flywheel_gateway.spool import Position, SpoolReader, SpoolWriter, record_id


def bodies(count: int, size: int = 100, first: int = 0) -> list[bytes]:
    return [f"{first + n:08d}".encode().ljust(size, b".") for n in range(count)]


def read_all(reader: SpoolReader, max_frames: int = 1000) -> list[bytes]:
    """Every frame there is now, each run marked shipped."""
    frames: list[bytes] = []
    while (run := reader.read(max_frames, 1 << 20)) is not None:
        frames += run.frames
        reader.mark_shipped(run)
    return frames


def segment_files(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.glob("*.seg"))


def test_frames_are_read_once_in_order_across_segments_and_shipped_ones_deleted(
    tmp_path: Path,
) -> None:
    writer = SpoolWriter(tmp_path, max_bytes=1 << 20, segment_bytes=1000)
    reader = SpoolReader(tmp_path)
    written = bodies(25)
    for body in written[:10]:
        assert writer.append(body)
    assert read_all(reader, max_frames=3) == written[:10]
    for body in written[10:]:
        assert writer.append(body)
    assert len(segment_files(tmp_path)) > 2
    assert read_all(reader, max_frames=4) == written[10:]
    assert segment_files(tmp_path) == [f"{4:020d}.seg"]  # only the newest is kept
    assert reader.read(10, 1 << 20) is None


def test_each_end_restarted_goes_on_where_it_was_and_a_new_writer_starts_a_segment(
    tmp_path: Path,
) -> None:
    writer = SpoolWriter(tmp_path, max_bytes=1 << 20)
    reader = SpoolReader(tmp_path)
    for body in bodies(5):
        writer.append(body)
    assert read_all(reader) == bodies(5)
    reader.close()
    writer.close()
    writer = SpoolWriter(tmp_path, max_bytes=1 << 20)
    for body in bodies(3, first=5):
        writer.append(body)
    assert segment_files(tmp_path) == [f"{1:020d}.seg", f"{2:020d}.seg"]
    reader = SpoolReader(tmp_path)
    assert read_all(reader) == bodies(3, first=5)
    assert segment_files(tmp_path) == [f"{2:020d}.seg"]


def test_one_writer_and_one_shipper_at_a_time(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, max_bytes=1 << 20)
    with pytest.raises(InUse, match=r"open in another gateway \(process \d+\): give each"):
        SpoolWriter(tmp_path, max_bytes=1 << 20)
    reader = SpoolReader(tmp_path)
    with pytest.raises(InUse, match="shipped by another process"):
        SpoolReader(tmp_path, wait_seconds=0.1)
    reader.close()
    SpoolReader(tmp_path).close()
    writer.close()
    SpoolWriter(tmp_path, max_bytes=1 << 20).close()


def test_a_full_spool_refuses_frames_until_the_shipper_deletes_segments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(spool, "_ROOM_CHECK_SECONDS", 0.0)
    writer = SpoolWriter(tmp_path, max_bytes=2000, segment_bytes=500)
    accepted = [body for body in bodies(30) if writer.append(body)]
    assert 10 <= len(accepted) < 30
    assert writer.size_bytes <= 2000
    reader = SpoolReader(tmp_path)
    assert read_all(reader) == accepted
    assert writer.append(b"after")  # the shipped segments were deleted: room again
    assert read_all(reader) == [b"after"]


def test_a_torn_tail_is_skipped_once_its_writer_is_gone_and_waited_for_before(
    tmp_path: Path,
) -> None:
    writer = SpoolWriter(tmp_path, max_bytes=1 << 20)
    for body in bodies(3):
        writer.append(body)
    writer.close()
    torn = spool.framing.frame(b"cut short by a kill")[:-5]
    with (tmp_path / f"{1:020d}.seg").open("ab") as segment:
        segment.write(torn)
    reader = SpoolReader(tmp_path)
    assert read_all(reader) == bodies(3)  # the newest segment: perhaps a write in progress
    writer = SpoolWriter(tmp_path, max_bytes=1 << 20)
    writer.append(b"next")
    assert read_all(reader) == [b"next"]  # the torn tail skipped, the old segment deleted
    assert segment_files(tmp_path) == [f"{2:020d}.seg"]


def test_a_write_in_progress_is_read_once_whole(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, max_bytes=1 << 20)
    writer.append(b"first")
    whole = spool.framing.frame(b"second")
    path = tmp_path / f"{1:020d}.seg"
    with path.open("ab") as segment:
        segment.write(whole[:7])
    reader = SpoolReader(tmp_path)
    assert read_all(reader) == [b"first"]
    with path.open("ab") as segment:
        segment.write(whole[7:])
    assert read_all(reader) == [b"second"]


def test_damaged_frames_in_the_middle_are_skipped_and_the_rest_read(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, max_bytes=1 << 20)
    for body in bodies(3):
        writer.append(body)
    writer.close()
    path = tmp_path / f"{1:020d}.seg"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # inside the second frame
    path.write_bytes(bytes(data))
    reader = SpoolReader(tmp_path)
    assert read_all(reader) == [bodies(3)[0], bodies(3)[2]]


def test_a_run_left_sending_is_read_again_whole_with_the_same_record_ids(tmp_path: Path) -> None:
    writer = SpoolWriter(tmp_path, max_bytes=1 << 20)
    for body in bodies(6):
        writer.append(body)
    reader = SpoolReader(tmp_path)
    run = reader.read(4, 1 << 20)
    assert run is not None
    assert run.frames == bodies(4)
    since = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
    reader.mark_sending(run, since)
    ids = [record_id(reader.identity, run.start, run.end, "iris", part) for part in range(2)]
    reader.close()  # killed before it knew what Kafka took

    reader = SpoolReader(tmp_path)
    assert reader.sending is not None
    assert reader.sending.since == since
    again = reader.read_again(reader.sending)
    assert (again.start, again.end, again.frames) == (run.start, run.end, run.frames)
    assert [
        record_id(reader.identity, again.start, again.end, "iris", part) for part in range(2)
    ] == ids
    assert len(set(ids)) == 2
    reader.mark_shipped(again)
    assert reader.sending is None
    assert read_all(reader) == bodies(6)[4:]
    assert reader.position == Position(1, (tmp_path / f"{1:020d}.seg").stat().st_size)
