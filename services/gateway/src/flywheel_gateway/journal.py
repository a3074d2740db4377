"""The write-ahead journal of prediction logs: every record is written here before its
requests are answered and kept until Kafka has acknowledged it, bounded in bytes.

One append-only file: a header (a magic number, how far the records were delivered, and
since when the oldest undelivered ones are being sent), then length-prefixed frames. Writes
go to the operating system at once, so a process killed at any moment loses nothing already
journaled, and a restarted one sends what was not delivered, in order. A record is marked
delivered right after Kafka acknowledges it; one killed in between may be in Kafka already,
which the sending time lets the next process find out. The delivered head is dropped by
rewriting the undelivered tail into a new file once it is worth it (or by truncating the
file when everything was delivered).

Positions are logical: byte offsets that stay valid across those rewrites within a process.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from flywheel_common.events import OutgoingRecord

_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")
_HEADER = struct.Struct("<4sQQ")
MAGIC = b"FWJ1"
HEADER_BYTES = _HEADER.size
COMPACT_BYTES = 16 * 1024 * 1024
"""Delivered bytes at the head of the file that make a rewrite worth it."""


def _frame(record: OutgoingRecord) -> bytes:
    parts = [_U16.pack(len(record.topic)), record.topic.encode()]
    key = record.key or b""
    parts += [_U32.pack(len(key)), key, _U32.pack(len(record.value)), record.value]
    parts.append(_U16.pack(len(record.headers)))
    for name, value in record.headers:
        encoded = name.encode()
        parts += [_U16.pack(len(encoded)), encoded, _U32.pack(len(value)), value]
    body = b"".join(parts)
    return _U32.pack(len(body)) + body


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


def _frames(data: bytes, start: int) -> Iterator[tuple[OutgoingRecord, int]]:
    """Each whole frame of `data` from `start`, with the offset where it ends; a torn last
    frame (a crash mid-write) is left out."""
    offset = start
    while offset + 4 <= len(data):
        (length,) = _U32.unpack_from(data, offset)
        if offset + 4 + length > len(data):
            return
        yield _unframe(data[offset + 4 : offset + 4 + length]), offset + 4 + length
        offset += 4 + length


class Journal:
    """Records on their way to Kafka. `append` writes them (the file stays within
    `max_bytes`); `read` returns undelivered ones from a position; `delivered` marks a
    prefix sent."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self._path = path
        self._max_bytes = max_bytes
        self._shift = 0
        """Logical position of the file's first byte after the last rewrite."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._sending_ms = 0
        """When the oldest undelivered records were first sent (ms since the epoch); 0: not."""
        self._delivered, self._size = self._open()

    def _open(self) -> tuple[int, int]:
        """(delivered offset, size) of the file, written afresh when missing, from an older
        journal without a header, or cut at a torn last frame."""
        data = self._path.read_bytes() if self._path.exists() else b""
        if data[:4] == MAGIC and len(data) >= HEADER_BYTES:
            _, delivered, self._sending_ms = _HEADER.unpack_from(data)
            frames_from = delivered
        else:  # an older journal's frames, none of them delivered or sent
            delivered, frames_from = HEADER_BYTES, 0
        end = max((end for _, end in _frames(data, frames_from)), default=frames_from)
        if frames_from == 0 or end < len(data):
            self._write_file(data[frames_from:end])
            return HEADER_BYTES, HEADER_BYTES + end - frames_from
        return delivered, len(data)

    def _write_file(self, frames: bytes) -> None:
        """Replace the file by a header (nothing delivered) and `frames`, atomically."""
        temporary = self._path.with_suffix(".rewrite")
        temporary.write_bytes(_HEADER.pack(MAGIC, HEADER_BYTES, self._sending_ms) + frames)
        os.replace(temporary, self._path)

    def _write_header(self) -> None:
        descriptor = os.open(self._path, os.O_WRONLY)
        try:
            os.pwrite(descriptor, _HEADER.pack(MAGIC, self._delivered, self._sending_ms), 0)
        finally:
            os.close(descriptor)

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
            with self._path.open("ab") as handle:
                handle.write(data)
            self._size += len(data)
        return ends

    def read(self, position: int, limit: int) -> list[tuple[OutgoingRecord, int]]:
        """Up to `limit` records from `position` (a record's start), each with its end."""
        physical = max(position - self._shift, self._delivered)
        with self._path.open("rb") as handle:
            handle.seek(physical)
            data = handle.read(self._size - physical)
        found = []
        for record, end in _frames(data, 0):
            found.append((record, physical + end + self._shift))
            if len(found) == limit:
                break
        return found

    def records(self) -> Iterator[OutgoingRecord]:
        """Every undelivered record, in order."""
        with self._path.open("rb") as handle:
            handle.seek(self._delivered)
            data = handle.read()
        for record, _ in _frames(data, 0):
            yield record

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
            self._write_file(b"")
        elif force or head >= COMPACT_BYTES:
            with self._path.open("rb") as handle:
                handle.seek(self._delivered)
                tail = handle.read()
            self._write_file(tail)
        else:
            return
        self._shift += head
        self._size -= head
        self._delivered = HEADER_BYTES
