"""Policies map onto the domain's rules with the contract's defaults; schedules pick slots."""

from __future__ import annotations

from datetime import UTC, datetime

from flywheel.drift.v1 import types_pb2 as drift_types
from flywheel.retrain.v1 import types_pb2 as pb
from flywheel_retrain import converters, domain
from flywheel_retrain.engine import last_slot


def test_the_default_policy_is_valid_and_retrains_on_data_drift() -> None:
    policy = converters.default_policy("iris")
    converters.validate_policy(policy)
    rule = converters.alert_rule(policy)
    assert rule.kinds == frozenset({"data", "prediction"})
    assert rule.min_severity == domain.Severity.MEDIUM
    assert converters.holdout_size(policy) == converters.DEFAULT_HOLDOUT_SIZE


def test_manual_runs_skip_the_label_guard_and_cooldown_can_be_overridden() -> None:
    policy = converters.default_policy("iris")
    policy.min_new_labeled_samples = 500
    assert (
        converters.guards(policy, manual=False, ignore_cooldown=False).min_new_labeled_samples
        == 500
    )
    manual = converters.guards(policy, manual=True, ignore_cooldown=True)
    assert manual.min_new_labeled_samples == 0
    assert manual.cooldown.total_seconds() == 0


def test_the_gate_direction_follows_the_metric_unless_set() -> None:
    policy = converters.default_policy("iris")
    policy.gate.metric, policy.gate.goal = "mae", pb.METRIC_GOAL_UNSPECIFIED
    assert not converters.gate(policy).higher_is_better
    policy.gate.goal = pb.METRIC_GOAL_MAXIMIZE
    assert converters.gate(policy).higher_is_better


def test_alerts_convert_with_their_kinds() -> None:
    from flywheel.drift.v1 import events_pb2 as drift_events

    alert = converters.alert_of(
        drift_events.DriftAlert(
            alert_id="a",
            model="iris",
            version=2,
            kinds=[drift_types.ALERT_KIND_CONCEPT],
            severity=drift_types.SEVERITY_LOW,
            features_drifted=0,
        )
    )
    assert alert.kinds == frozenset({"concept"})
    assert (
        domain.alert_matches(converters.alert_rule(converters.default_policy("iris")), alert)
        is None
    )


def test_the_last_schedule_slot_respects_the_time_zone() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday
    assert last_slot("0 3 * * 1", "", now) == datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    # 03:00 in New York is 08:00 UTC in November.
    assert last_slot("0 3 * * 1", "America/New_York", now) == datetime(
        2026, 11, 23, 8, 0, tzinfo=UTC
    )
    assert last_slot("0 12 * * *", "", now) == now
