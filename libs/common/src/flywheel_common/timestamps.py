"""Protobuf timestamps and durations: the one conversion every service's messages use.

Messages from callers and topics are read through the validating converters at the bottom
(`datetime_of`, `epoch_seconds_of`, `timedelta_of`, `seconds_of`): a field out of range is
an InvalidArgument that names the field, never a ValueError or OverflowError further in.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from flywheel_common.errors import InvalidArgument

MIN_TIMESTAMP_SECONDS = -62_135_596_800
"""0001-01-01T00:00:00Z, the first second a protobuf Timestamp may hold."""
MAX_TIMESTAMP_SECONDS = 253_402_300_799
"""9999-12-31T23:59:59Z, the last one."""
MAX_DURATION = timedelta(days=36_525)
"""The longest duration any setting takes (100 years): long enough for any window, timeout
or cooldown, short enough that now + the duration is still a date."""
_NANOS = 1_000_000_000


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


def datetime_of(stamp: Timestamp, field: str) -> datetime:
    """The zone-aware UTC moment of `stamp`; InvalidArgument naming `field` when it is not a
    valid Timestamp."""
    _check_timestamp(stamp, field)
    return stamp.ToDatetime(UTC)


def epoch_seconds_of(stamp: Timestamp, field: str) -> float:
    """Seconds since the epoch of a valid Timestamp (see `datetime_of`)."""
    _check_timestamp(stamp, field)
    return stamp.seconds + stamp.nanos / _NANOS


def timedelta_of(value: Duration, field: str, maximum: timedelta = MAX_DURATION) -> timedelta:
    """A Duration between zero and `maximum`; InvalidArgument naming `field` otherwise."""
    if not 0 <= value.nanos < _NANOS:
        raise InvalidArgument(
            f"{field}.nanos is {value.nanos}; it must be from 0 to 999999999 (carry whole "
            "seconds in seconds)"
        )
    limit = int(maximum.total_seconds())
    if not 0 <= value.seconds <= limit or (value.seconds == limit and value.nanos):
        raise InvalidArgument(
            f"{field}.seconds is {value.seconds}; {field} must be from 0 to {limit} seconds"
        )
    return timedelta(seconds=value.seconds, microseconds=value.nanos // 1000)


def seconds_of(value: Duration, field: str, maximum: timedelta = MAX_DURATION) -> float:
    """A valid Duration in seconds (see `timedelta_of`)."""
    return timedelta_of(value, field, maximum).total_seconds()


def check_times(message: Message, path: str = "") -> None:
    """Every Timestamp and Duration set anywhere in `message`, checked as `datetime_of`
    and `timedelta_of` do: for messages stored or echoed whole (as JSON, which refuses
    out-of-range ones), whichever of their fields the service reads."""
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        name = f"{path}{field.name}"
        if field.message_type.GetOptions().map_entry:
            entry_value = field.message_type.fields_by_name["value"]
            items = list(value.values()) if entry_value.message_type is not None else []
        else:
            items = list(value) if field.is_repeated else [value]
        for item in items:
            if isinstance(item, Timestamp):
                _check_timestamp(item, name)
            elif isinstance(item, Duration):
                timedelta_of(item, name)
            else:
                check_times(item, f"{name}.")


def _check_timestamp(stamp: Timestamp, field: str) -> None:
    if not 0 <= stamp.nanos < _NANOS:
        raise InvalidArgument(
            f"{field}.nanos is {stamp.nanos}; it must be from 0 to 999999999 (carry whole "
            "seconds in seconds)"
        )
    if not MIN_TIMESTAMP_SECONDS <= stamp.seconds <= MAX_TIMESTAMP_SECONDS:
        raise InvalidArgument(
            f"{field}.seconds is {stamp.seconds}; a timestamp must be from "
            f"{MIN_TIMESTAMP_SECONDS} (0001-01-01T00:00:00Z) to {MAX_TIMESTAMP_SECONDS} "
            "(9999-12-31T23:59:59Z)"
        )
