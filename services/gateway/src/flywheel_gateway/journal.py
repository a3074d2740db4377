"""The write-ahead journal of prediction logs of earlier releases: every record was written
here before its requests were answered and kept until Kafka had acknowledged it, bounded in
bytes. The spool (`spool`) has taken its place; a shipper sends what a journal left on the
disk still holds (`Shipper.ship_journal`), then deletes it.

One append-only file: a header (a magic number, how far the records were delivered, since
when the oldest undelivered ones are being sent, and a CRC-32C of those), then frames: a
marker, the body's length and its CRC-32C, the body. An append is one write into the
operating system's page cache, so a process killed at any moment loses nothing already
journaled; `sync` flushes the writes to the disk, which a machine crash needs (the logger
calls it on a bounded interval, or before answering). A restarted process sends what was
not delivered, in order. A record is marked delivered right after Kafka acknowledges it;
one killed in between may be in Kafka already, which the sending time lets the next
process find out. The delivered head is dropped by truncating the file when everything was
delivered, or by rewriting the undelivered tail into a new file once the head is worth it.

Opening a journal checks every undelivered frame: a torn tail (a write cut short by a
crash, or blocks a machine crash left unwritten) is cut off, and a damaged stretch in the
middle is skipped up to the next frame whose checksum holds; both are logged and counted.

Positions are logical: byte offsets that stay valid across those rewrites within a process.

One process at a time: a journal holds an exclusive lock on `<file>.lock` while it is open
(released by `close`, or by the operating system when the process dies), so a second
gateway pointed at the same data directory is refused at its start instead of sending the
first one's records as well.
"""

from __future__ import annotations

import logging
import mmap
import os
import struct
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from opentelemetry import metrics

from flywheel_common.events import OutgoingRecord
from flywheel_gateway import framing
from flywheel_gateway.framing import FRAME_OVERHEAD, Damage, InUse, crc, hold_lock

log = logging.getLogger(__name__)

_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_HEAD = struct.Struct("<4sQQ")
MAGIC = b"FWJ2"
HEADER_BYTES = _HEAD.size + _U32.size
COMPACT_BYTES = 16 * 1024 * 1024
"""Delivered bytes at the head of the file that make a rewrite worth it."""
COPY_CHUNK = 1024 * 1024
_OLDER_MAGIC = b"FWJ1"
"""The journal before checksums: the same header without its CRC, frames of a length and a
body; opened once and rewritten in the current format."""


def _header(delivered: int, sending_ms: int) -> bytes:
    head = _HEAD.pack(MAGIC, delivered, sending_ms)
    return head + _U32.pack(crc(head))


def _frame(record: OutgoingRecord) -> bytes:
    parts = [_U16.pack(len(record.topic)), record.topic.encode()]
    key = record.key or b""
    parts += [_U32.pack(len(key)), key, _U32.pack(len(record.value)), record.value]
    parts.append(_U16.pack(len(record.headers)))
    for name, value in record.headers:
        encoded = name.encode()
        parts += [_U16.pack(len(encoded)), encoded, _U32.pack(len(value)), value]
    return framing.frame(b"".join(parts))


def _unframe(body: bytes) -> OutgoingRecord:
    offset = 0

    def take(size: int) -> bytes:
        nonlocal offset
        chunk = body[offset : offset + size]
        offset += size
        return chunk

    topic = take(_U16.unpack(take(2))[0]).decode()
    key = take(_U32.unpack(take(4))[0])
    value = take(_U32.unpack(take(4))[0])
    headers = []
    for _ in range(_U16.unpack(take(2))[0]):
        name = take(_U16.unpack(take(2))[0]).decode()
        headers.append((name, take(_U32.unpack(take(4))[0])))
    return OutgoingRecord(topic=topic, key=key or None, value=value, headers=headers)


JournalInUse = InUse
"""Another gateway holds the journal."""


def _scan(
    data: mmap.mmap, start: int, size: int
) -> Iterator[tuple[OutgoingRecord, int, int] | Damage]:
    """Each record of `data[start:size]` (the record, its frame's start and end), and each
    damaged stretch between them: a damage reaching `size` is a torn tail."""
    for found in framing.scan(data, start, size):
        if isinstance(found, Damage):
            yield found
        else:
            offset, end = found
            yield _unframe(data[offset + FRAME_OVERHEAD : end]), offset, end


def _older_frames(data: mmap.mmap, start: int, size: int) -> Iterator[OutgoingRecord]:
    """The records of a journal written before checksums, up to a torn last one."""
    offset = start
    while offset + 4 <= size:
        (length,) = _U32.unpack_from(data, offset)
        if offset + 4 + length > size:
            return
        yield _unframe(data[offset + 4 : offset + 4 + length])  # bodies did not change
        offset += 4 + length


@dataclass
class Recovery:
    """What opening the journal found wrong with it, and skipped."""

    torn_tail_bytes: int = 0
    damaged_stretches: int = 0
    damaged_bytes: int = 0
    header_damaged: bool = False


class Journal:
    """Records on their way to Kafka. `append` writes them (the file stays within
    `max_bytes`); `read` returns undelivered ones from a position; `delivered` marks a
    prefix sent; `sync` flushes the writes to the disk (from any thread)."""

    def __init__(self, path: Path, max_bytes: int, meter: metrics.Meter | None = None) -> None:
        self._path = path
        self._max_bytes = max_bytes
        self._skipped = (meter or metrics.get_meter(__name__)).create_counter(
            "flywheel.gateway.journal.skipped",
            description="Stretches of the prediction-log journal skipped when it was opened: "
            "a torn tail (reason torn_tail), damaged records (damaged) or a damaged header "
            "(header: undelivered records sent again)",
        )
        self._shift = 0
        """Logical position of the file's first byte after the last rewrite."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sending_ms = 0
        """When the oldest undelivered records were first sent (ms since the epoch); 0: not."""
        self._fd = -1
        """The file, open for reading and writing at explicit offsets (no open per write)."""
        self._lock = threading.Lock()
        """Held while the file descriptor is synced, replaced or closed."""
        self._unsynced = False
        self.recovery = Recovery()
        self._lock_fd = hold_lock(
            path.with_name(path.name + ".lock"),
            f"the prediction journal {path} is open in another gateway (process {{holder}}): "
            "give each gateway a data directory of its own (FLYWHEEL_GATEWAY_DATA_DIR)",
        )
        try:
            self._delivered, self._size = self._open()
            self._reopen()
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _reopen(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
            self._fd = os.open(self._path, os.O_RDWR)

    def close(self) -> None:
        """Close the file and let another process open it."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1

    def sync(self) -> bool:
        """Flush what was written to the disk; False when there was nothing to flush.
        Blocking: call it off the event loop."""
        with self._lock:
            if self._fd < 0 or not self._unsynced:
                return False
            self._unsynced = False
            os.fdatasync(self._fd)
            return True

    def _write_at(self, offset: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.pwrite(self._fd, view, offset)
            view, offset = view[written:], offset + written
        self._unsynced = True

    def _open(self) -> tuple[int, int]:
        """(delivered offset, size) of the file: checked, and written afresh when missing,
        of the older format, or damaged in the middle; a torn tail is cut off."""
        if not self._path.exists() or self._path.stat().st_size == 0:
            self._write_file([])
            return HEADER_BYTES, HEADER_BYTES
        with (
            self._path.open("rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data,
        ):
            size = len(data)
            if data[:4] != MAGIC:
                self._write_file(_frame(record) for record in self._older_records(data, size))
                return HEADER_BYTES, self._path.stat().st_size
            delivered = self._read_header(data, size)
            kept: list[tuple[int, int]] = []
            for found in _scan(data, delivered, size):
                if isinstance(found, Damage):
                    self._skip(found, torn=found.end == size)
                elif kept and kept[-1][1] == found[1]:
                    kept[-1] = (kept[-1][0], found[2])
                else:
                    kept.append((found[1], found[2]))
            if self.recovery.damaged_stretches or self.recovery.header_damaged:
                self._write_file(
                    data[chunk : min(chunk + COPY_CHUNK, end)]
                    for start, end in kept
                    for chunk in range(start, end, COPY_CHUNK)
                )
                return HEADER_BYTES, self._path.stat().st_size
        if self.recovery.torn_tail_bytes:
            size -= self.recovery.torn_tail_bytes
            os.truncate(self._path, size)
        return delivered, size

    def _read_header(self, data: mmap.mmap, size: int) -> int:
        """The delivered offset the header holds (and its sending time); a damaged header
        counts nothing as delivered or being sent."""
        if (
            size >= HEADER_BYTES
            and crc(data[: _HEAD.size]) == _U32.unpack_from(data, _HEAD.size)[0]
        ):
            _, delivered, self._sending_ms = _HEAD.unpack_from(data)
            # A truncation that reached the disk before the header did leaves it pointing
            # past the end: everything was delivered.
            return int(min(max(delivered, HEADER_BYTES), size))
        self.recovery.header_damaged = True
        log.error(
            "prediction journal header damaged; its undelivered records may be sent twice",
            extra={"path": str(self._path)},
        )
        self._skipped.add(1, {"reason": "header"})
        return min(HEADER_BYTES, size)

    def _older_records(self, data: mmap.mmap, size: int) -> Iterator[OutgoingRecord]:
        if data[:4] == _OLDER_MAGIC and size >= _HEAD.size:
            _, delivered, self._sending_ms = _HEAD.unpack_from(data)
            return _older_frames(data, delivered, size)
        return _older_frames(data, 0, size)  # older still: frames only, none sent

    def _skip(self, damage: Damage, *, torn: bool) -> None:
        skipped = damage.end - damage.start
        if torn:
            self.recovery.torn_tail_bytes = skipped
            log.warning(
                "prediction journal: torn tail cut off",
                extra={"path": str(self._path), "offset": damage.start, "bytes": skipped},
            )
        else:
            self.recovery.damaged_stretches += 1
            self.recovery.damaged_bytes += skipped
            log.error(
                "prediction journal: damaged records skipped; their logs are lost",
                extra={"path": str(self._path), "offset": damage.start, "bytes": skipped},
            )
        self._skipped.add(1, {"reason": "torn_tail" if torn else "damaged"})

    def _write_file(self, frames: Iterable[bytes]) -> None:
        """Replace the file by a header (nothing delivered) and `frames`, atomically and
        on the disk before the old file goes."""
        temporary = self._path.with_suffix(".rewrite")
        with temporary.open("wb") as handle:
            handle.write(_header(HEADER_BYTES, self._sending_ms))
            for frame in frames:
                handle.write(frame)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self._path)
        directory = os.open(self._path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
        if self._fd >= 0:
            self._reopen()

    def _write_header(self) -> None:
        self._write_at(0, _header(self._delivered, self._sending_ms))

    @property
    def start(self) -> int:
        """The position of the first undelivered record."""
        return self._delivered + self._shift

    @property
    def end(self) -> int:
        """The position after the last record."""
        return self._size + self._shift

    @property
    def empty(self) -> bool:
        """Every record was delivered."""
        return self._delivered == self._size

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def sending_since(self) -> datetime | None:
        """When the oldest undelivered records were first sent; None when they were not."""
        if not self._sending_ms:
            return None
        return datetime.fromtimestamp(self._sending_ms / 1000, UTC)

    def sending(self, since: datetime | None) -> None:
        """Record that the oldest undelivered records are being sent since `since` (None:
        they are not, or no longer)."""
        self._sending_ms = 0 if since is None else int(since.timestamp() * 1000)
        self._write_header()

    def append(self, records: Sequence[OutgoingRecord]) -> list[int]:
        """Write as many records as fit; the position after each one written."""
        frames = [_frame(record) for record in records]
        if frames and self._size + len(frames[0]) > self._max_bytes:
            self._compact(force=True)  # the delivered head makes room
        room = self._max_bytes - self._size
        written: list[bytes] = []
        ends: list[int] = []
        position = self.end
        for frame in frames:
            if len(frame) > room:
                break
            written.append(frame)
            room -= len(frame)
            position += len(frame)
            ends.append(position)
        if written:
            data = b"".join(written)
            self._write_at(self._size, data)
            self._size += len(data)
        return ends

    def read(self, position: int, limit: int) -> list[tuple[OutgoingRecord, int]]:
        """Up to `limit` records from `position` (a record's start), each with its end."""
        physical = max(position - self._shift, self._delivered)
        found: list[tuple[OutgoingRecord, int]] = []
        if physical >= self._size:
            return found
        with mmap.mmap(self._fd, self._size, prot=mmap.PROT_READ) as data:
            for item in _scan(data, physical, self._size):
                if isinstance(item, Damage):
                    # This process wrote every byte since the journal was opened and checked.
                    raise OSError(f"prediction journal {self._path} changed under the gateway")
                record, _, end = item
                found.append((record, end + self._shift))
                if len(found) == limit:
                    break
        return found

    def records(self) -> Iterator[OutgoingRecord]:
        """Every undelivered record, in order."""
        position = self.start
        while batch := self.read(position, 1000):
            for record, _ in batch:
                yield record
            position = batch[-1][1]

    def delivered(self, position: int) -> None:
        """Mark every record before `position` (a record's end) delivered."""
        physical = position - self._shift
        if physical <= self._delivered:
            return
        self._delivered = physical
        self._compact(force=False)
        if self._delivered == physical:  # not rewritten: record the mark in place
            self._write_header()

    def _compact(self, *, force: bool) -> None:
        """Drop the delivered head: truncate when nothing is left, rewrite the tail when the
        head is large (or `force`, to make room)."""
        head = self._delivered - HEADER_BYTES
        if head <= 0:
            return
        if self._delivered == self._size:
            # Cut before the header says so: a crash in between finds a header pointing
            # past the end, which reads as everything delivered.
            os.ftruncate(self._fd, HEADER_BYTES)
            self._delivered = HEADER_BYTES
            self._write_header()
        elif force or head >= COMPACT_BYTES:
            self._write_file(self._tail())
        else:
            return
        self._shift += head
        self._size -= head
        self._delivered = HEADER_BYTES

    def _tail(self) -> Iterator[bytes]:
        """The undelivered frames, a chunk at a time."""
        offset = self._delivered
        while offset < self._size:
            chunk = os.pread(self._fd, min(COPY_CHUNK, self._size - offset), offset)
            offset += len(chunk)
            yield chunk
