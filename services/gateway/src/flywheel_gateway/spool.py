"""The spool of prediction logs between the serving process, which writes them, and the
shipper process, which sends them to Kafka.

A directory of segment files (`<number>.seg`, numbered upwards), each a run of checksummed
frames (`framing`), one log each:
- The serving process appends a log's frame to the newest segment: one write into the
  operating system's page cache, so a process killed after it loses nothing. `sync`
  flushes the writes to the disk (a machine crash needs it). A writer always starts a
  segment of its own, never appending after what another process left (perhaps torn), and
  moves to the next one past `segment_bytes`. Every segment but the newest is complete.
- The shipper reads the frames in order from its position, and records how far it shipped
  in `shipped` (a small record written in place, with its checksum). Before sending a run
  of frames it records the run and when the sending began (`Sending`): a shipper killed
  in between reads the same run again and builds the same records under the same ids (see
  `record_id`), so that it can find out which ones Kafka already holds. It deletes a
  segment once shipped whole, except the newest (a writer may still be appending to it).
- The writer keeps the spool within `max_bytes` on the disk: an append that would pass it
  is refused (the log is shed) until the shipper has deleted segments.

A torn tail (a write cut short by a kill, or blocks a machine crash left unwritten) ends
every segment but the newest one with bytes that are no frame: the shipper skips them.
Damaged bytes in the middle of a segment are skipped up to the next whole frame. Both are
logged and counted. At the end of the newest segment, bytes that are no frame yet are a
write in progress, read again later.

One writer and one shipper at a time: each holds an exclusive lock (`writer.lock`,
`shipper.lock`) while the spool is open, released by `close` or by the operating system
when its process dies.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import os
import struct
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from flywheel_gateway import framing
from flywheel_gateway.framing import FRAME_OVERHEAD, Damage

log = logging.getLogger(__name__)

SEGMENT_BYTES = 16 * 1024 * 1024
SUFFIX = ".seg"
_IDENTITY = "spool.id"
_SHIPPED = "shipped"
_PROGRESS = struct.Struct("<4sQQQQQQ")
"""The shipper's progress: a magic number, its position (segment, offset), and the run it is
sending: since when (ms since the epoch; 0: none), from where (segment, offset), up to."""
_PROGRESS_MAGIC = b"FWS1"
_U32 = struct.Struct("<I")
_ROOM_CHECK_SECONDS = 0.1
"""How often a full spool looks again for segments the shipper deleted."""
_LIST_SECONDS = 1.0
"""How often a shipper with nothing to read lists the segments (numbers a writer skipped)."""


def _segments(directory: Path) -> dict[int, Path]:
    found = {}
    for path in directory.glob(f"*{SUFFIX}"):
        with contextlib.suppress(ValueError):
            found[int(path.stem)] = path
    return dict(sorted(found.items()))


def _segment_path(directory: Path, number: int) -> Path:
    return directory / f"{number:020d}{SUFFIX}"


def identity(directory: Path) -> uuid.UUID:
    """The spool's identity: made once, when the spool is first opened, and kept in it."""
    path = directory / _IDENTITY
    with contextlib.suppress(FileNotFoundError, ValueError):
        return uuid.UUID(path.read_text().strip())
    made = uuid.uuid4()
    _write_whole(path, f"{made}\n")
    return made


def _write_whole(path: Path, text: str) -> None:
    """Replace `path` by `text` in one step: a reader (or a crash) sees the old or the new."""
    temporary = path.with_name(path.name + ".new")
    temporary.write_text(text)
    os.replace(temporary, path)


class SpoolWriter:
    """The serving process's end: `append` a log's frame, `sync` from any thread."""

    def __init__(self, directory: Path, max_bytes: int, segment_bytes: int = SEGMENT_BYTES) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._lock_fd = framing.hold_lock(
            directory / "writer.lock",
            f"the prediction spool {directory} is open in another gateway (process {{holder}}): "
            "give each gateway a data directory of its own (FLYWHEEL_GATEWAY_DATA_DIR)",
        )
        identity(directory)
        self._sizes = {number: path.stat().st_size for number, path in _segments(directory).items()}
        self._bytes = sum(self._sizes.values())
        self._number = max(self._sizes, default=0)
        self._fd = -1
        self._size = 0
        self._to_sync: list[int] = []
        """Descriptors of segments written since the last `sync` and no longer appended to."""
        self._unsynced = False
        self._sync_lock = threading.Lock()
        self._room_checked = 0.0
        self._next_segment()

    def _next_segment(self) -> None:
        self._number += 1
        fd = os.open(
            _segment_path(self._directory, self._number),
            os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND,
            0o600,
        )
        with self._sync_lock:
            if self._fd >= 0:
                if self._unsynced:
                    self._to_sync.append(self._fd)
                else:
                    os.close(self._fd)
            self._fd, self._size, self._unsynced = fd, 0, False
        self._sizes[self._number] = 0

    def append(self, body: bytes) -> bool:
        """Write one log's frame; False (nothing written) when the spool is full."""
        return self.append_all([body]) == 1

    def append_all(self, bodies: list[bytes]) -> int:
        """Write the logs' frames with one write, in order; returns how many were written:
        fewer than all when the spool is full. OSError when the disk refuses the write: the
        next append starts a new segment, after whatever part of this one was written."""
        frames = [framing.frame(body) for body in bodies]
        total = sum(len(frame) for frame in frames)
        if self._bytes + total > self._max_bytes and not self._room_for(total):
            fitting, total = 0, 0
            while fitting < len(frames) and self._bytes + total + len(frames[fitting]) <= (
                self._max_bytes
            ):
                total += len(frames[fitting])
                fitting += 1
            frames = frames[:fitting]
        if not frames:
            return 0
        if self._size and self._size + total > self._segment_bytes:
            self._next_segment()
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        try:
            written = os.write(self._fd, data)
            while written < len(data):
                written += os.write(self._fd, data[written:])
        except OSError:
            self._next_segment()
            raise
        finally:
            self._unsynced = True
        self._size += total
        self._sizes[self._number] = self._size
        self._bytes += total
        return len(frames)

    def _room_for(self, size: int) -> bool:
        """Whether the shipper has deleted enough segments since the last look; looks at
        most every `_ROOM_CHECK_SECONDS`, so that a full spool costs no file system calls
        per request."""
        now = time.monotonic()
        if now - self._room_checked < _ROOM_CHECK_SECONDS:
            return False
        self._room_checked = now
        present = _segments(self._directory)
        self._sizes = {number: kept for number, kept in self._sizes.items() if number in present}
        self._bytes = sum(self._sizes.values())
        return self._bytes + size <= self._max_bytes

    @property
    def size_bytes(self) -> int:
        """The bytes of the segments on the disk, as this writer last counted them."""
        return self._bytes

    def sync(self) -> bool:
        """Flush what was written to the disk; False when there was nothing to flush.
        Blocking: call it off the event loop."""
        with self._sync_lock:
            rolled, self._to_sync = self._to_sync, []
            for fd in rolled:
                os.fdatasync(fd)
                os.close(fd)
            if self._fd < 0 or not self._unsynced:
                return bool(rolled)
            self._unsynced = False
            os.fdatasync(self._fd)
            return True

    def close(self) -> None:
        """Flush, close, and let another process write the spool."""
        self.sync()
        with self._sync_lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1


@dataclass(frozen=True)
class Position:
    """A place in the spool: a segment and a byte offset in it."""

    segment: int
    offset: int


@dataclass(frozen=True)
class Sending:
    """A run of frames being sent since `since`: from `start` up to `end` in one segment."""

    since: datetime
    start: Position
    end: int


@dataclass(frozen=True)
class Run:
    """Frames read from one segment, from `start` up to `end`."""

    start: Position
    end: int
    frames: list[bytes]


class SpoolReader:
    """The shipper's end: `read` the next run of frames, record that it is `sending`, and
    that it was `shipped`."""

    def __init__(self, directory: Path, wait_seconds: float = 0.0) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self._directory = directory
        self._skipped: Counter[str] = Counter()
        """Stretches skipped since last taken, by reason (`predictions.SKIPPED`)."""
        self._lock_fd = framing.hold_lock(
            directory / "shipper.lock",
            f"the prediction spool {directory} is shipped by another process (process {{holder}})",
            wait_seconds,
        )
        self.identity = identity(directory)
        self._progress_fd = os.open(directory / _SHIPPED, os.O_RDWR | os.O_CREAT, 0o600)
        self.position, self.sending = self._read_progress()
        self._mapped: tuple[int, mmap.mmap] | None = None
        self._listed = 0.0

    def close(self) -> None:
        self._unmap()
        if self._progress_fd >= 0:
            os.close(self._progress_fd)
            self._progress_fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _read_progress(self) -> tuple[Position, Sending | None]:
        try:
            data = os.pread(self._progress_fd, _PROGRESS.size + 4, 0)
        except OSError:
            data = b""
        if not data:
            return Position(0, 0), None
        body = data[: _PROGRESS.size]
        if (
            len(data) < _PROGRESS.size + 4
            or framing.crc(body) != _U32.unpack_from(data, _PROGRESS.size)[0]
        ):
            # One small write in place: damage here means the disk lost it. Starting over
            # sends again what is still in the spool, rather than lose it.
            log.error(
                "prediction spool progress damaged; its logs may be sent twice",
                extra={"path": str(self._directory / _SHIPPED)},
            )
            return Position(0, 0), None
        _, segment, offset, since_ms, sending_segment, sending_offset, end = _PROGRESS.unpack(body)
        position = Position(segment, offset)
        if not since_ms:
            return position, None
        return position, Sending(
            since=datetime.fromtimestamp(since_ms / 1000, UTC),
            start=Position(sending_segment, sending_offset),
            end=end,
        )

    def _write_progress(self) -> None:
        """One write in place of a few dozen bytes and their checksum: a kill leaves the old
        record or the new, never half of one."""
        sending = self.sending
        body = _PROGRESS.pack(
            _PROGRESS_MAGIC,
            self.position.segment,
            self.position.offset,
            int(sending.since.timestamp() * 1000) if sending else 0,
            sending.start.segment if sending else 0,
            sending.start.offset if sending else 0,
            sending.end if sending else 0,
        )
        os.pwrite(self._progress_fd, body + _U32.pack(framing.crc(body)), 0)

    def mark_sending(self, run: Run, since: datetime) -> None:
        """Record, before sending them, that the frames of `run` are being sent."""
        self.sending = Sending(since, run.start, run.end)
        self._write_progress()

    def mark_shipped(self, run: Run) -> None:
        """Record that every frame up to the end of `run` was sent."""
        self.position = Position(run.start.segment, run.end)
        self.sending = None
        self._write_progress()

    def read_again(self, sending: Sending) -> Run:
        """The frames of a run whose sending a stopped shipper left unfinished."""
        data = self._map(sending.start.segment)
        frames: list[bytes] = []
        if data is not None:
            for found in framing.scan(data, sending.start.offset, min(sending.end, len(data))):
                if not isinstance(found, Damage):
                    frames.append(data[found[0] + FRAME_OVERHEAD : found[1]])
        return Run(sending.start, sending.end, frames)

    def read(self, max_frames: int, max_bytes: int) -> Run | None:
        """The next frames from the position, all from one segment: at most `max_frames`,
        and past `max_bytes` only for the first one. None when there are none yet. Moves
        past (and deletes) segments shipped whole. Costs two `stat` calls when there is
        nothing new: a shipper polls it."""
        while True:
            current = self._current()
            if current is None:
                return None
            # Asked before reading: a writer finishes a segment before it starts the next.
            later = self._later_than(current)
            data = self._map(current)
            if data is not None:
                offset = self.position.offset if self.position.segment == current else 0
                run = self._frames(data, current, offset, not later, max_frames, max_bytes)
                if run is not None:
                    return run
            if not later:
                return None
            self._finish(current)

    def _current(self) -> int | None:
        """The segment to read from: the position's, else the first after it."""
        if _segment_path(self._directory, self.position.segment).exists():
            return self.position.segment
        later = [number for number in _segments(self._directory) if number >= self.position.segment]
        return later[0] if later else None

    def _later_than(self, segment: int) -> bool:
        """Whether a segment after `segment` exists: the next one (a writer numbers them one
        by one), or, looked for at most every second, any later one."""
        if _segment_path(self._directory, segment + 1).exists():
            return True
        now = time.monotonic()
        if now - self._listed < _LIST_SECONDS:
            return False
        self._listed = now
        return any(number > segment for number in _segments(self._directory))

    def _frames(
        self,
        data: mmap.mmap,
        segment: int,
        offset: int,
        newest: bool,
        max_frames: int,
        max_bytes: int,
    ) -> Run | None:
        frames: list[bytes] = []
        size = len(data)
        start, end, taken = offset, offset, 0
        for found in framing.scan(data, offset, size):
            if isinstance(found, Damage):
                if found.end == size and newest:
                    break  # a write still in progress, or a tail torn by a kill: read again
                self._skip(segment, found, torn=found.end == size)
                end = found.end
                if not frames:
                    start = end
                continue
            begin, finish = found
            body_size = finish - begin - FRAME_OVERHEAD
            if frames and (len(frames) == max_frames or taken + body_size > max_bytes):
                break
            frames.append(data[begin + FRAME_OVERHEAD : finish])
            taken += body_size
            end = finish
        if not frames:
            if end > offset:  # only damage: move past it
                self.position = Position(segment, end)
                self._write_progress()
            return None
        return Run(Position(segment, start), end, frames)

    def _finish(self, segment: int) -> None:
        """The segment was shipped whole and is not the newest: delete it, move on."""
        self._unmap()
        _segment_path(self._directory, segment).unlink(missing_ok=True)
        self.position = Position(segment + 1, 0)
        self._write_progress()

    def _map(self, segment: int) -> mmap.mmap | None:
        """The segment's bytes as they are now (mapped again when it grew); None when it is
        gone or empty."""
        path = _segment_path(self._directory, segment)
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return None
        if self._mapped is not None:
            number, data = self._mapped
            if number == segment and len(data) == size:
                return data
        self._unmap()
        if not size:
            return None
        with path.open("rb") as handle:
            data = mmap.mmap(handle.fileno(), size, access=mmap.ACCESS_READ)
        self._mapped = (segment, data)
        return data

    def _unmap(self) -> None:
        if self._mapped is not None:
            self._mapped[1].close()
            self._mapped = None

    def _skip(self, segment: int, damage: Damage, *, torn: bool) -> None:
        skipped = damage.end - damage.start
        extra = {"segment": segment, "offset": damage.start, "bytes": skipped}
        if torn:
            log.warning("prediction spool: torn tail skipped", extra=extra)
        else:
            log.error("prediction spool: damaged frames skipped; their logs are lost", extra=extra)
        self._skipped["torn_tail" if torn else "damaged"] += 1

    def take_skipped(self) -> Counter[str]:
        """The stretches skipped since the last call, by reason (torn_tail, damaged)."""
        taken, self._skipped = self._skipped, Counter()
        return taken


def record_id(spool: uuid.UUID, start: Position, end: int, model: str, part: int) -> str:
    """The event id of the `part`-th record of `model`'s logs in a run: the same whenever
    the run is read again, also by another shipper process."""
    return str(uuid.uuid5(spool, f"{start.segment}:{start.offset}:{end}:{model}:{part}"))
