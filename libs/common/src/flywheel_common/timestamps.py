"""Protobuf timestamps from datetimes: the one conversion every service's messages use."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(when: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def optional_timestamp(when: datetime | None) -> Timestamp | None:
    """None stays None, so optional message fields stay unset."""
    return None if when is None else timestamp(when)


def now() -> Timestamp:
    return timestamp(datetime.now(UTC))
