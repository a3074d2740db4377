"""Checksummed frames in append-only files, and the lock that keeps such a file to one
process: what the prediction journal and the spool of prediction logs share.

A frame: a marker, the body's length and its CRC-32C (`FRAME`), then the body. The marker
starts every frame, so that reading can find the next whole frame after a damaged one.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import google_crc32c

FRAME = struct.Struct("<4sII")
MARKER = b"\x89FWr"
FRAME_OVERHEAD = FRAME.size

Buffer = bytes | mmap.mmap


def crc(data: bytes | memoryview) -> int:
    return int(google_crc32c.value(data))


def frame(body: bytes) -> bytes:
    """`body` as a frame."""
    return FRAME.pack(MARKER, len(body), crc(body)) + body


@dataclass(frozen=True)
class Damage:
    """Bytes from `start` to `end` that hold no frame whose checksum holds."""

    start: int
    end: int


def frame_end(data: Buffer, offset: int, size: int) -> int | None:
    """Where the frame at `offset` ends, when a whole frame is there and its checksum holds."""
    if offset + FRAME_OVERHEAD > size:
        return None
    marker, length, checksum = FRAME.unpack_from(data, offset)
    end = int(offset + FRAME_OVERHEAD + length)
    if marker != MARKER or end > size or crc(data[offset + FRAME_OVERHEAD : end]) != checksum:
        return None
    return end


def next_frame(data: Buffer, offset: int, size: int) -> int:
    """The start of the next whole frame whose checksum holds, or `size` when none does."""
    while (found := data.find(MARKER, offset, size)) >= 0:
        if frame_end(data, found, size) is not None:
            return found
        offset = found + 1
    return size


def scan(data: Buffer, start: int, size: int) -> Iterator[tuple[int, int] | Damage]:
    """The start and end of each frame of `data[start:size]`, and each damaged stretch
    between them: a damage reaching `size` is a torn tail (or a frame still being written)."""
    offset = start
    while offset < size:
        end = frame_end(data, offset, size)
        if end is not None:
            yield offset, end
            offset = end
            continue
        resume = next_frame(data, offset + 1, size)
        yield Damage(offset, resume)
        offset = resume


class InUse(RuntimeError):
    """Another process (or another open object of this one) holds the lock."""


def hold_lock(path: Path, in_use: str, wait_seconds: float = 0.0) -> int:
    """An open descriptor holding the exclusive lock `path`, with this process's id written
    in it; InUse with `in_use` (formatted with the holder's process id as `{holder}`) when
    another holds it for longer than `wait_seconds`. The operating system releases the lock
    when the descriptor is closed or the process dies."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() < deadline:
                time.sleep(0.05)
                continue
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise InUse(in_use.format(holder=holder)) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
