"""An append-only on-disk journal of encoded records, bounded in bytes, replayed in order."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator, Sequence
from pathlib import Path

from flywheel_common.events import OutgoingRecord

_U32 = struct.Struct("<I")
_U16 = struct.Struct("<H")


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


class Journal:
    """Records Kafka could not take yet. Appends are flushed to the OS at once, so a
    crash of this process loses nothing already journaled; a full journal refuses more."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self._path = path
        self._max_bytes = max_bytes
        path.parent.mkdir(parents=True, exist_ok=True)
        self._size = path.stat().st_size if path.exists() else 0

    @property
    def size_bytes(self) -> int:
        return self._size

    @property
    def empty(self) -> bool:
        return self._size == 0

    def append(self, records: Sequence[OutgoingRecord]) -> int:
        """Write as many records as fit; returns how many were written."""
        frames = []
        room = self._max_bytes - self._size
        for record in records:
            frame = _frame(record)
            if len(frame) > room:
                break
            frames.append(frame)
            room -= len(frame)
        if frames:
            data = b"".join(frames)
            with self._path.open("ab") as handle:
                handle.write(data)
                handle.flush()
            self._size += len(data)
        return len(frames)

    def records(self) -> Iterator[OutgoingRecord]:
        if not self._path.exists():
            return
        data = self._path.read_bytes()
        offset = 0
        while offset + 4 <= len(data):
            (length,) = _U32.unpack_from(data, offset)
            if offset + 4 + length > len(data):
                break  # a torn last frame from a crash mid-write: it was never acknowledged
            yield _unframe(data[offset + 4 : offset + 4 + length])
            offset += 4 + length

    def drop_first(self, count: int) -> None:
        """Forget the oldest `count` records (sent), keeping any appended meanwhile."""
        rest = list(self.records())[count:]
        temp = self._path.with_suffix(".rewrite")
        temp.write_bytes(b"".join(_frame(record) for record in rest))
        os.replace(temp, self._path)
        self._size = self._path.stat().st_size

    def clear(self) -> None:
        if self._path.exists():
            os.truncate(self._path, 0)
        self._size = 0
