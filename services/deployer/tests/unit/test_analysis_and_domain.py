"""Canary analysis and the rollout state machine, without storage or transport."""

from datetime import timedelta

import pytest

from flywheel_common.errors import FailedPrecondition, InvalidArgument
from flywheel_deployer.analysis import (
    Decision,
    InsufficientData,
    Metric,
    Outcome,
    StepRule,
    Thresholds,
    Window,
    analyse,
    js_divergence,
    merge,
)
from flywheel_deployer.domain import (
    Arm,
    Phase,
    Plan,
    Role,
    Rollout,
    Route,
    Strategy,
    Trigger,
    check_arms,
    check_steps,
)
from flywheel_testing.fakes import T0

RULE = StepRule(min_seconds=60, min_requests=100)
STRICT = Thresholds(max_error_rate=0.02, max_latency_p99_ratio=1.5, max_js_divergence=0.1)


def window(requests: int, errors: int = 0, p99: float = 10.0, **outputs: int) -> Window:
    return Window(f"w{requests}-{errors}-{p99}", requests, errors, p99, dict(outputs))


def test_windows_merge_counts_and_weight_latency_by_requests() -> None:
    totals = merge([window(100, 1, p99=10.0, a=60, b=40), window(300, 5, p99=20.0, a=100)])
    assert (totals.requests, totals.errors) == (400, 6)
    assert totals.latency_p99_ms == pytest.approx(17.5)
    assert totals.outputs == {"a": 160, "b": 40}
    assert totals.error_rate == pytest.approx(0.015)


def test_js_divergence_is_zero_for_equal_and_one_for_disjoint_distributions() -> None:
    assert js_divergence({"a": 10, "b": 30}, {"a": 1, "b": 3}) == pytest.approx(0.0)
    assert js_divergence({"a": 10}, {"b": 10}) == pytest.approx(1.0)
    assert 0 < js_divergence({"a": 60, "b": 40}, {"a": 40, "b": 60}) < 0.1


def test_a_healthy_step_advances_only_after_its_duration_and_request_count() -> None:
    good, base = merge([window(150, 1, a=50)]), merge([window(1000, 10, a=50)])
    assert analyse(RULE, STRICT, good, base, 30, last_step=False).decision is Decision.WAIT
    few = merge([window(50, 0, a=50)])
    assert analyse(RULE, STRICT, few, base, 90, last_step=False).decision is Decision.WAIT
    advance = analyse(RULE, STRICT, good, base, 90, last_step=False)
    assert advance.decision is Decision.ADVANCE
    assert {c.outcome for c in advance.checks} == {Outcome.PASSED}
    assert analyse(RULE, STRICT, good, base, 90, last_step=True).decision is Decision.PROMOTE


def test_an_erroring_candidate_rolls_back_as_soon_as_it_has_enough_requests() -> None:
    bad, base = merge([window(120, 12, a=50)]), merge([window(1000, 5, a=50)])
    result = analyse(RULE, STRICT, bad, base, 5, last_step=False)
    assert result.decision is Decision.ROLLBACK
    [failed] = [c for c in result.checks if c.outcome is Outcome.FAILED]
    assert failed.metric is Metric.ERROR_RATE
    assert failed.observed == pytest.approx(0.1)
    assert failed.threshold == 0.02
    assert "error_rate 0.1 > 0.02" in result.summary


def test_a_slow_candidate_rolls_back_on_the_latency_ratio() -> None:
    slow, base = merge([window(200, 0, p99=40.0)]), merge([window(1000, 0, p99=10.0)])
    result = analyse(RULE, STRICT, slow, base, 90, last_step=False)
    assert result.decision is Decision.ROLLBACK
    assert "latency_p99_ratio 4 > 1.5" in result.summary


def test_shifted_predictions_roll_back_on_divergence_and_missing_data_skips_a_check() -> None:
    shifted = merge([window(200, 0, a=10, b=190)])
    base = merge([window(1000, 0, a=500, b=500)])
    assert analyse(RULE, STRICT, shifted, base, 90, False).decision is Decision.ROLLBACK
    no_outputs = analyse(RULE, STRICT, merge([window(200)]), merge([window(1000)]), 90, False)
    divergence = next(c for c in no_outputs.checks if c.metric is Metric.JS_DIVERGENCE)
    assert divergence.outcome is Outcome.SKIPPED
    assert no_outputs.decision is Decision.ADVANCE


def test_accuracy_below_the_allowed_delta_rolls_back() -> None:
    thresholds = Thresholds(min_accuracy_delta=-0.02)
    worse = merge([Window("c", 200, 0, 10.0, labeled=200, accuracy=0.85)])
    base = merge([Window("b", 1000, 0, 10.0, labeled=1000, accuracy=0.95)])
    result = analyse(RULE, thresholds, worse, base, 90, False)
    assert result.decision is Decision.ROLLBACK
    assert result.checks[0].observed == pytest.approx(-0.10)


@pytest.mark.parametrize(
    ("action", "decision"),
    [
        (InsufficientData.PAUSE, Decision.PAUSE),
        (InsufficientData.ROLLBACK, Decision.ROLLBACK),
        (InsufficientData.WAIT, Decision.WAIT),
    ],
)
def test_a_step_starved_of_traffic_follows_its_policy(
    action: InsufficientData, decision: Decision
) -> None:
    rule = StepRule(min_seconds=60, min_requests=100, max_seconds=600, on_insufficient_data=action)
    result = analyse(rule, STRICT, merge([window(10)]), merge([window(1000)]), 700, False)
    assert result.decision is decision


def canary(baseline: int = 1) -> Rollout:
    return Rollout(
        rollout_id="r1",
        model="iris",
        version=2,
        baseline=baseline,
        plan=Plan(Strategy.CANARY, steps=(5, 25, 50, 100), rule=RULE),
        phase=Phase.PENDING,
        trigger=Trigger.PROMOTION,
        started_by="test",
        reason="",
        created_at=T0,
        updated_at=T0,
    )


def test_a_canary_loads_first_then_walks_its_steps_then_takes_everything() -> None:
    rollout = canary()
    assert rollout.routing().routes == (Route(1, 100), Route(2, 0, Role.CANARY))
    weights = []
    rollout = rollout.begin(T0)
    weights.append(rollout.routing().routes)
    while not rollout.last_step:
        rollout = rollout.advance(T0 + timedelta(minutes=len(weights)))
        weights.append(rollout.routing().routes)
    assert [routes[1].weight for routes in weights] == [5, 25, 50, 100]
    assert all(routes[0].weight + routes[1].weight == 100 for routes in weights)
    with pytest.raises(FailedPrecondition):
        rollout.advance(T0)
    done = rollout.finish(Phase.SUCCEEDED, T0, "passed")
    assert done.routing().routes == (Route(2, 100),)


def test_a_rolled_back_canary_restores_the_baseline_at_once() -> None:
    rollout = canary().begin(T0).advance(T0)
    rolled_back = rollout.finish(Phase.ROLLED_BACK, T0, "error_rate 0.1 > 0.02")
    assert rolled_back.routing().routes == (Route(1, 100),)
    assert rolled_back.routing().versions == {1}


def test_pausing_holds_and_resuming_restarts_the_step_clock() -> None:
    rollout = canary().begin(T0)
    paused = rollout.pause(T0 + timedelta(seconds=30), "operator")
    assert paused.phase is Phase.PAUSED
    assert paused.routing() == rollout.routing()
    resumed = paused.resume(T0 + timedelta(minutes=10))
    assert resumed.phase is Phase.PROGRESSING
    assert resumed.step_started_at == T0 + timedelta(minutes=10)
    finished = resumed.finish(Phase.SUCCEEDED, T0, "done")
    with pytest.raises(FailedPrecondition, match="only a running rollout can be paused"):
        finished.pause(T0, "too late")
    with pytest.raises(FailedPrecondition):
        rollout.resume(T0)


def test_ab_arms_and_shadow_routing() -> None:
    arms = (Arm("control", 1, 70), Arm("treatment", 2, 30))
    ab = Rollout(
        "r2", "iris", 2, 1, Plan(Strategy.AB, arms=arms, sticky_key="user"),
        Phase.PENDING, Trigger.MANUAL, "test", "", T0, T0,
    )  # fmt: skip
    assert {r.weight for r in ab.routing().routes if r.role is Role.ARM} == {0}
    running = ab.begin(T0).routing()
    assert running.sticky_key == "user"
    assert [(r.version, r.weight, r.arm) for r in running.routes] == [
        (1, 70, "control"),
        (2, 30, "treatment"),
    ]
    shadow = Rollout(
        "r3", "iris", 2, 1, Plan(Strategy.SHADOW, shadow_percent=50),
        Phase.PENDING, Trigger.MANUAL, "test", "", T0, T0,
    )  # fmt: skip
    assert shadow.routing().versions == {1, 2}
    mirrored = shadow.begin(T0).routing()
    assert mirrored.routes == (Route(1, 100),)
    assert (mirrored.shadow_version, mirrored.shadow_percent) == (2, 50)


def test_invalid_steps_and_arms_are_rejected_with_what_to_fix() -> None:
    with pytest.raises(InvalidArgument, match="increase strictly"):
        check_steps((5, 50, 25))
    with pytest.raises(InvalidArgument, match=r"1\.\.100"):
        check_steps((0, 100))
    with pytest.raises(InvalidArgument, match="sum to 100, they sum to 90"):
        check_arms((Arm("a", 1, 60), Arm("b", 2, 30)))
    with pytest.raises(InvalidArgument, match="distinct"):
        check_arms((Arm("a", 1, 50), Arm("a", 2, 50)))
