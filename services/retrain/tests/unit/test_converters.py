"""Policies map onto the domain's rules with the contract's defaults and survive the
contract both ways; schedules pick slots."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel.drift.v1 import types_pb2 as drift_types
from flywheel.retrain.v1 import types_pb2 as pb
from flywheel_common.errors import InvalidArgument
from flywheel_retrain import converters, domain
from flywheel_retrain.domain import GateConfig, MetricGoal, Policy
from flywheel_retrain.engine import last_slot


def test_the_default_policy_is_valid_and_retrains_on_data_drift() -> None:
    policy = Policy.default("iris")
    policy.validate()
    rule = policy.alert_rule()
    assert rule.kinds == frozenset({"data", "prediction"})
    assert rule.min_severity == domain.Severity.MEDIUM
    assert policy.holdout_size == domain.DEFAULT_HOLDOUT_SIZE


def test_manual_runs_skip_the_label_guard_and_cooldown_can_be_overridden() -> None:
    policy = replace(Policy.default("iris"), min_new_labeled_samples=500)
    assert policy.guards(manual=False, ignore_cooldown=False).min_new_labeled_samples == 500
    manual = policy.guards(manual=True, ignore_cooldown=True)
    assert manual.min_new_labeled_samples == 0
    assert manual.cooldown.total_seconds() == 0


def test_the_gate_direction_follows_the_metric_unless_set() -> None:
    policy = replace(Policy.default("iris"), gate=GateConfig("mae", MetricGoal.UNSPECIFIED))
    assert not policy.gate_rule().higher_is_better
    policy = replace(policy, gate=GateConfig("mae", MetricGoal.MAXIMIZE))
    assert policy.gate_rule().higher_is_better


def test_alerts_convert_with_their_kinds() -> None:
    alert, occurred_at = converters.alert_of(
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
    assert occurred_at is None
    assert domain.alert_matches(Policy.default("iris").alert_rule(), alert) is None


def test_a_policy_survives_the_contract_both_ways() -> None:
    policy = replace(
        Policy.default("iris"),
        alert_trigger=domain.AlertTrigger(True, domain.Severity.HIGH, 2, ("data", "concept")),
        decay_trigger=domain.DecayTrigger(True, domain.DecayMetric.ERROR_RATE, 0.1, 3, 50),
        schedule_trigger=domain.ScheduleTrigger(True, "0 3 * * 1", "Europe/Paris"),
        follow_up_trigger=domain.FollowUpTrigger(True, 6),
        approval_mode=domain.ApprovalMode.HUMAN_SIGN_OFF,
        executor=domain.ExecutorConfig(
            domain.ExecutorKind.KUBERNETES,
            timedelta(minutes=5),
            2,
            "python t.py",
            "img",
            {"A": "1"},
        ),
        revision=3,
        updated_by="alice",
        updated_at=datetime(2026, 11, 23, tzinfo=UTC),
    )
    message = converters.policy_message(policy)
    assert message.decay_trigger.metric == pb.DECAY_METRIC_ERROR_RATE
    assert message.executor.kind == pb.EXECUTOR_KIND_KUBERNETES
    assert message.follow_up_trigger.growth == 6
    assert converters.policy_of(message) == policy
    assert converters.policy_from_document(converters.policy_document(policy)) == policy


def test_enum_numbers_the_contract_lacks_are_invalid_arguments() -> None:
    with pytest.raises(InvalidArgument, match=r"gate\.goal 9 is not a MetricGoal"):
        converters.policy_of(
            pb.RetrainPolicy(model="iris", gate=pb.EvaluationGate(goal=pb.MetricGoal.ValueType(9)))
        )
    with pytest.raises(InvalidArgument, match="is not a Severity"):
        converters.policy_of(
            pb.RetrainPolicy(
                model="iris",
                alert_trigger=pb.AlertTrigger(min_severity=drift_types.Severity.ValueType(42)),
            )
        )
    with pytest.raises(InvalidArgument, match="70 is not a RunState"):
        converters.run_states([1, 7, 70])


def test_the_last_schedule_slot_respects_the_time_zone() -> None:
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)  # a Monday
    assert last_slot("0 3 * * 1", "", now) == datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    # 03:00 in New York is 08:00 UTC in November.
    assert last_slot("0 3 * * 1", "America/New_York", now) == datetime(
        2026, 11, 23, 8, 0, tzinfo=UTC
    )
    assert last_slot("0 12 * * *", "", now) == now
