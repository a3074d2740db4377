"""The validating Timestamp and Duration converters every service reads messages with."""

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from flywheel.drift.v1 import types_pb2 as drift_types
from flywheel_common.errors import InvalidArgument
from flywheel_common.timestamps import (
    MAX_TIMESTAMP_SECONDS,
    MIN_TIMESTAMP_SECONDS,
    check_times,
    datetime_of,
    epoch_seconds_of,
    seconds_of,
    timedelta_of,
)


def test_valid_timestamps_convert_at_both_ends_of_the_range() -> None:
    assert datetime_of(Timestamp(seconds=MIN_TIMESTAMP_SECONDS), "t") == datetime(
        1, 1, 1, tzinfo=UTC
    )
    assert datetime_of(Timestamp(seconds=MAX_TIMESTAMP_SECONDS, nanos=999_999_999), "t").year == (
        9999
    )
    assert epoch_seconds_of(Timestamp(seconds=10, nanos=500_000_000), "t") == 10.5


@pytest.mark.parametrize(
    ("stamp", "fragment"),
    [
        (Timestamp(seconds=-(10**11)), "created_after.seconds is -100000000000; a timestamp"),
        (Timestamp(seconds=2**62), "0001-01-01T00:00:00Z"),
        (Timestamp(nanos=2_147_483_647), "created_after.nanos is 2147483647"),
        (Timestamp(seconds=1, nanos=-1), "created_after.nanos is -1"),
    ],
)
def test_invalid_timestamps_name_the_field(stamp: Timestamp, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        datetime_of(stamp, "created_after")
    with pytest.raises(InvalidArgument, match=fragment):
        epoch_seconds_of(stamp, "created_after")


def test_valid_durations_convert() -> None:
    assert timedelta_of(Duration(seconds=90, nanos=1_000), "d") == timedelta(
        seconds=90, microseconds=1
    )
    assert seconds_of(Duration(), "d") == 0.0
    assert seconds_of(Duration(seconds=60), "d", maximum=timedelta(minutes=1)) == 60.0


A_MINUTE = timedelta(minutes=1)
A_CENTURY = timedelta(days=36_525)


@pytest.mark.parametrize(
    ("value", "maximum", "fragment"),
    [
        (Duration(seconds=2**62), A_CENTURY, "cooldown.seconds is 4611686018427387904; cooldown"),
        (Duration(nanos=2_147_483_647), A_CENTURY, "cooldown.nanos is 2147483647"),
        (Duration(seconds=-5), A_CENTURY, "cooldown.seconds is -5"),
        (Duration(seconds=0, nanos=-5), A_CENTURY, "cooldown.nanos is -5"),
        (Duration(seconds=61), A_MINUTE, "from 0 to 60 seconds"),
        (Duration(seconds=60, nanos=1), A_MINUTE, "from 0 to 60 seconds"),
    ],
)
def test_invalid_durations_name_the_field(
    value: Duration, maximum: timedelta, fragment: str
) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        seconds_of(value, "cooldown", maximum)


def test_every_time_set_anywhere_in_a_message_is_checked() -> None:
    fine = drift_types.MonitorConfig(
        model="m", window=drift_types.WindowSpec(size_duration=Duration(seconds=60))
    )
    check_times(fine)
    unread = drift_types.MonitorConfig(
        model="m",
        window=drift_types.WindowSpec(kind=0, size_duration=Duration(nanos=-(2**31))),
    )
    with pytest.raises(InvalidArgument, match=r"window\.size_duration\.nanos is -2147483648"):
        check_times(unread)
    with pytest.raises(InvalidArgument, match=r"updated_at\.seconds is 253402300800"):
        check_times(drift_types.MonitorConfig(updated_at=Timestamp(seconds=253_402_300_800)))
