"""Monitor configs from callers: every value the detector cannot use is named in the error."""

import pytest
from google.protobuf.duration_pb2 import Duration

from flywheel.drift.v1 import types_pb2 as types
from flywheel_common.errors import InvalidArgument
from flywheel_drift.detection import AlarmPolicy
from flywheel_drift.monitors import monitor_of


@pytest.mark.parametrize(
    ("config", "fragment"),
    [
        (
            types.MonitorConfig(model="m", correction=-(2**31)),
            "correction -2147483648 is not a MultipleTestingCorrection",
        ),
        (
            types.MonitorConfig(model="m", min_alert_severity=99),
            "min_alert_severity 99 is not a Severity",
        ),
        (
            types.MonitorConfig(
                model="m",
                window=types.WindowSpec(
                    kind=types.WINDOW_KIND_TIME, size_duration=Duration(seconds=2**62)
                ),
            ),
            "window.size_duration.seconds is 4611686018427387904",
        ),
        (
            types.MonitorConfig(
                model="m",
                concept_drift=types.ConceptDriftConfig(label_wait=Duration(nanos=-1)),
            ),
            "concept_drift.label_wait.nanos is -1",
        ),
        (
            types.MonitorConfig(
                model="m", alarm=types.AlarmPolicy(drifted_windows=3, of_windows=2)
            ),
            "alarm must have 1 <= drifted_windows <= of_windows <= 100, got drifted_windows=3 "
            "of_windows=2",
        ),
        (
            types.MonitorConfig(model="m", alarm=types.AlarmPolicy(drifted_windows=-1)),
            "drifted_windows=-1",
        ),
        (
            types.MonitorConfig(model="m", alarm=types.AlarmPolicy(of_windows=101)),
            "of_windows=101",
        ),
    ],
)
def test_unusable_configs_are_invalid_arguments(config: types.MonitorConfig, fragment: str) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        monitor_of(config, default_window=100)


def test_a_valid_config_gives_its_rules() -> None:
    config = types.MonitorConfig(
        model="m",
        window=types.WindowSpec(kind=types.WINDOW_KIND_TIME, size_duration=Duration(seconds=60)),
    )
    assert monitor_of(config, default_window=100).window.seconds == 60


def test_an_alarm_policy_defaults_to_every_drifted_window() -> None:
    assert monitor_of(types.MonitorConfig(model="m"), 100).detection.alarm == AlarmPolicy(1, 1)
    two_of_three = types.MonitorConfig(
        model="m", alarm=types.AlarmPolicy(drifted_windows=2, of_windows=3)
    )
    assert monitor_of(two_of_three, 100).detection.alarm == AlarmPolicy(2, 3)
    three = types.MonitorConfig(model="m", alarm=types.AlarmPolicy(drifted_windows=3))
    assert monitor_of(three, 100).detection.alarm == AlarmPolicy(3, 3)  # 3 in a row
