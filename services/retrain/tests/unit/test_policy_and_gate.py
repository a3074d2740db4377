"""The retrain trigger's decisions: which events warrant a run, the guards, the gate."""

from datetime import UTC, datetime, timedelta

import pytest

from flywheel_retrain.domain import (
    Alert,
    AlertRule,
    DecayRule,
    DecayTracker,
    FollowUpRule,
    Gate,
    Guards,
    History,
    MetricWindow,
    Severity,
    Verdict,
    alert_matches,
    decide,
    evaluate_gate,
    follow_up_due,
    next_data_check,
)

NOW = datetime(2026, 11, 23, 12, tzinfo=UTC)


def alert(
    severity: Severity = Severity.HIGH, kinds: set[str] | None = None, drifted: int = 3
) -> Alert:
    return Alert("a1", "iris", 1, severity, frozenset(kinds or {"data"}), drifted)


def test_alerts_must_meet_severity_kind_and_feature_count() -> None:
    rule = AlertRule(
        min_severity=Severity.MEDIUM, min_drifted_features=2, kinds=frozenset({"data"})
    )
    assert alert_matches(rule, alert()) is None
    assert "below MEDIUM" in (alert_matches(rule, alert(Severity.LOW)) or "")
    assert "not among" in (alert_matches(rule, alert(kinds={"quality"})) or "")
    assert "needs 2" in (alert_matches(rule, alert(drifted=1)) or "")
    assert alert_matches(rule, alert(Severity.LOW, {"concept"}, 0)) is None
    assert alert_matches(AlertRule(enabled=False), alert()) == "alert triggers are disabled"


def window(n: int, value: float, labeled: int = 100) -> MetricWindow:
    return MetricWindow(f"w{n}", "iris", 1, value, labeled)


def test_decay_needs_consecutive_labeled_windows_past_the_threshold() -> None:
    tracker = DecayTracker(
        DecayRule(enabled=True, threshold=0.9, consecutive_windows=2, min_labeled=50)
    )
    assert not tracker.observe(window(1, 0.85))
    assert not tracker.observe(window(2, 0.95))  # recovered: the streak restarts
    assert not tracker.observe(window(3, 0.80))
    assert not tracker.observe(window(4, 0.70, labeled=10))  # too few labels to judge
    assert tracker.observe(window(5, 0.80))
    errors = DecayTracker(DecayRule(enabled=True, higher_is_better=False, threshold=0.1))
    assert errors.observe(window(6, 0.2))


def test_a_follow_up_is_due_when_the_rows_since_the_change_grew_by_the_policy_s_factor() -> None:
    rule = FollowUpRule(enabled=True, growth=4)
    assert not follow_up_due(rule, learnt_from=1000, labeled_since_change=3999)
    assert follow_up_due(rule, learnt_from=1000, labeled_since_change=4000)
    assert not follow_up_due(rule, learnt_from=0, labeled_since_change=10**6)
    assert not follow_up_due(FollowUpRule(enabled=False), 1000, 10**6)


def test_a_burst_of_alerts_yields_one_run() -> None:
    guards = Guards(cooldown=timedelta(hours=1), max_concurrent_runs=1)
    history = History()
    decisions = []
    for n in range(100):
        decision = decide(f"alert:a{n}", guards, history, NOW + timedelta(seconds=n))
        decisions.append(decision.verdict)
        if decision.run:
            history = History(
                trigger_keys=history.trigger_keys | {decision.trigger_key},
                running=1,
                last_started_at=NOW + timedelta(seconds=n),
            )
    assert decisions.count(Verdict.RUN) == 1
    assert set(decisions[1:]) == {Verdict.BUSY}


@pytest.mark.parametrize(
    ("history", "verdict"),
    [
        (History(trigger_keys=frozenset({"alert:a1"})), Verdict.DUPLICATE),
        (History(running=2), Verdict.BUSY),
        (History(last_started_at=NOW - timedelta(minutes=10)), Verdict.COOLING_DOWN),
        (History(new_labeled_samples=10), Verdict.TOO_FEW_LABELS),
        (History(last_started_at=NOW - timedelta(hours=2), new_labeled_samples=500), Verdict.RUN),
    ],
)
def test_guards(history: History, verdict: Verdict) -> None:
    guards = Guards(cooldown=timedelta(hours=1), max_concurrent_runs=2, min_new_labeled_samples=100)
    assert decide("alert:a1", guards, history, NOW).verdict is verdict


@pytest.mark.parametrize(
    ("history", "verdict"),
    [
        (History(running=1, last_started_at=NOW - timedelta(minutes=2)), Verdict.QUEUED),
        (History(running=2, last_started_at=NOW - timedelta(minutes=2)), Verdict.BUSY),
        (History(running=1, last_started_at=NOW - timedelta(seconds=30)), Verdict.BUSY),
    ],
    ids=["one-waits-behind", "one-waits-already", "cooling-down"],
)
def test_an_automatic_trigger_waits_behind_the_run_in_progress(
    history: History, verdict: Verdict
) -> None:
    guards = Guards(cooldown=timedelta(minutes=1), max_concurrent_runs=1, queue_when_busy=True)
    decision = decide("alert:a2", guards, history, NOW)
    assert decision.verdict is verdict
    assert decision.run is (verdict is Verdict.QUEUED)


def test_the_gate_asks_for_a_real_improvement() -> None:
    gate = Gate("accuracy", higher_is_better=True, min_improvement=0.01)
    assert evaluate_gate(gate, 0.95, 0.93).passed
    worse = evaluate_gate(gate, 0.93, 0.935)
    assert not worse.passed
    assert "improvement -0.005 < required 0.01" in worse.reason
    errors = Gate("mean_absolute_error", higher_is_better=False, min_improvement=0.0)
    assert evaluate_gate(errors, 1.2, 1.5).passed
    assert evaluate_gate(gate, 0.5, None).passed  # nothing in production to beat


@pytest.mark.parametrize(
    ("waited", "look_after"),
    [(0, 2), (20, 5), (600, 60)],
    ids=["at-once", "a-while", "long"],
)
def test_a_run_waiting_for_rows_looks_soon_then_less_often(waited: int, look_after: int) -> None:
    assert next_data_check(timedelta(seconds=waited)) == timedelta(seconds=look_after)
