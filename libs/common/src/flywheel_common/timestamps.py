"""Protobuf timestamps and durations: the one conversion every service's messages use."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def optional_timestamp(when: datetime | None) -> Timestamp | None:
    """None stays None, so optional message fields stay unset."""
    return None if when is None else timestamp(when)


def now() -> Timestamp:
    # From the integer clock directly: FromDatetime is pure Python, and this runs once per
    # prediction log.
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    return Timestamp(seconds=seconds, nanos=nanos)


def epoch(seconds: float) -> Timestamp:
    """A timestamp from seconds since the epoch (event times carried as floats)."""
    whole, nanos = divmod(round(seconds * 1e9), 1_000_000_000)
    return Timestamp(seconds=whole, nanos=nanos)


def duration(seconds: float) -> Duration:
    whole, nanos = divmod(round(seconds * 1e9), 1_000_000_000)
    return Duration(seconds=whole, nanos=nanos)


def stored_utc(moment: datetime) -> datetime:
    """A datetime read back from the database, zone-aware: SQLite returns them without a
    zone, and every service writes them in UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
