"""When to retrain and whether a candidate may replace production: pure decisions.

The trigger sees drift alerts and metric windows; the policy says which of them warrant a
run, and the guards (one run per trigger, a cooldown, a cap on concurrent runs, enough new
labels) keep a burst of alerts from becoming a burst of runs. The gate compares a candidate
with production on the same holdout.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum


class RunState(IntEnum):
    """Where a retrain run is; the numbers are flywheel.retrain.v1.RunState's."""

    QUEUED = 1
    PREPARING_DATA = 2
    TRAINING = 3
    GATING = 4
    AWAITING_APPROVAL = 5
    PROMOTED = 6
    REJECTED = 7
    FAILED = 8
    CANCELLED = 9

    @property
    def label(self) -> str:
        """The lower-case name people read in logs and metrics: `awaiting_approval`."""
        return self.name.lower()


IN_PROGRESS = frozenset({RunState.PREPARING_DATA, RunState.TRAINING, RunState.GATING})
"""States the run engine works in: a run found in one after a restart is resumed."""
ACTIVE = frozenset({RunState.QUEUED, *IN_PROGRESS, RunState.AWAITING_APPROVAL})
"""Unfinished runs. One awaiting sign-off still holds its slot: a second candidate would
compete with it."""
TERMINAL = frozenset(RunState) - ACTIVE

_ENDINGS = frozenset({RunState.FAILED, RunState.CANCELLED})
NEXT_STATES: dict[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.PREPARING_DATA}) | _ENDINGS,
    # A run stays in a state while its attempts, job handles and gate result are recorded.
    RunState.PREPARING_DATA: frozenset({RunState.PREPARING_DATA, RunState.TRAINING}) | _ENDINGS,
    RunState.TRAINING: frozenset({RunState.TRAINING, RunState.GATING}) | _ENDINGS,
    RunState.GATING: frozenset(
        {RunState.GATING, RunState.AWAITING_APPROVAL, RunState.PROMOTED, RunState.REJECTED}
    )
    | _ENDINGS,
    RunState.AWAITING_APPROVAL: frozenset({RunState.PROMOTED, RunState.REJECTED}) | _ENDINGS,
    **{state: frozenset() for state in TERMINAL},
}
"""The run's state machine: from each state, the states a change may leave it in."""


class IllegalTransition(Exception):
    """A change would move a run along an edge the state machine does not have: a bug."""


def check_transition(run_id: str, before: RunState, after: RunState) -> None:
    if after not in NEXT_STATES[before]:
        raise IllegalTransition(f"run {run_id} cannot go from {before.label} to {after.label}")


class Severity(IntEnum):
    """Drift alert severities, ordered as in the drift contract."""

    NONE = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


@dataclass(frozen=True)
class AlertRule:
    enabled: bool = True
    min_severity: Severity = Severity.MEDIUM
    min_drifted_features: int = 1
    kinds: frozenset[str] = frozenset()
    """Alert kinds that count (data, prediction, quality, concept); empty means all."""
    on_concept_drift: bool = True


@dataclass(frozen=True)
class DecayRule:
    enabled: bool = False
    higher_is_better: bool = True
    """True for accuracy; False for error rate or mean absolute error."""
    threshold: float = 0.0
    consecutive_windows: int = 1
    min_labeled: int = 1


@dataclass(frozen=True)
class Guards:
    cooldown: timedelta = timedelta(hours=1)
    max_concurrent_runs: int = 1
    min_new_labeled_samples: int = 0


@dataclass(frozen=True)
class Alert:
    alert_id: str
    model: str
    version: int
    severity: Severity
    kinds: frozenset[str]
    drifted_features: int


@dataclass(frozen=True)
class MetricWindow:
    window_id: str
    model: str
    version: int
    value: float | None
    """The decay metric of the window (accuracy, error rate...), None without labels."""
    labeled: int


class Verdict(StrEnum):
    RUN = "run"
    IGNORED = "ignored"
    """The event does not meet the policy."""
    DUPLICATE = "duplicate"
    """A run for this trigger exists already."""
    COOLING_DOWN = "cooling_down"
    BUSY = "busy"
    """As many runs as allowed are in progress."""
    TOO_FEW_LABELS = "too_few_labels"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    trigger_key: str
    reason: str

    @property
    def run(self) -> bool:
        return self.verdict is Verdict.RUN


def alert_matches(rule: AlertRule, alert: Alert) -> str | None:
    """Why the alert does not warrant a run, or None when it does."""
    if not rule.enabled:
        return "alert triggers are disabled"
    if "concept" in alert.kinds and rule.on_concept_drift:
        return None
    if alert.severity < rule.min_severity:
        return f"severity {alert.severity.name} is below {rule.min_severity.name}"
    if rule.kinds and not (alert.kinds & rule.kinds):
        return f"alert kinds {sorted(alert.kinds)} are not among {sorted(rule.kinds)}"
    if alert.drifted_features < rule.min_drifted_features:
        return (
            f"{alert.drifted_features} drifted feature(s), the policy needs "
            f"{rule.min_drifted_features}"
        )
    return None


@dataclass
class DecayTracker:
    """Consecutive windows of one model version past the decay threshold."""

    rule: DecayRule
    streak: int = 0
    windows: list[str] = field(default_factory=list)

    def observe(self, window: MetricWindow) -> bool:
        """True when this window completes the run of decayed windows the rule asks for."""
        if not self.rule.enabled or window.value is None or window.labeled < self.rule.min_labeled:
            return False
        decayed = (
            window.value < self.rule.threshold
            if self.rule.higher_is_better
            else window.value > self.rule.threshold
        )
        if not decayed:
            self.streak, self.windows = 0, []
            return False
        self.streak += 1
        self.windows.append(window.window_id)
        if self.streak >= self.rule.consecutive_windows:
            self.streak, self.windows = 0, []
            return True
        return False


@dataclass(frozen=True)
class History:
    """What the guards need to know about a model's runs."""

    trigger_keys: frozenset[str] = frozenset()
    """Every trigger that has already started a run (any outcome)."""
    running: int = 0
    last_started_at: datetime | None = None
    new_labeled_samples: int = 0


def decide(trigger_key: str, guards: Guards, history: History, now: datetime) -> Decision:
    """Whether a trigger that met the policy may start a run now."""
    if trigger_key in history.trigger_keys:
        return Decision(Verdict.DUPLICATE, trigger_key, "a run for this trigger exists")
    if history.running >= guards.max_concurrent_runs:
        return Decision(
            Verdict.BUSY,
            trigger_key,
            f"{history.running} run(s) in progress, the policy allows {guards.max_concurrent_runs}",
        )
    if history.last_started_at is not None and now - history.last_started_at < guards.cooldown:
        remaining = guards.cooldown - (now - history.last_started_at)
        return Decision(
            Verdict.COOLING_DOWN,
            trigger_key,
            f"cooling down for another {remaining.total_seconds():.0f}s",
        )
    if history.new_labeled_samples < guards.min_new_labeled_samples:
        return Decision(
            Verdict.TOO_FEW_LABELS,
            trigger_key,
            f"{history.new_labeled_samples} new labeled samples, the policy needs "
            f"{guards.min_new_labeled_samples}",
        )
    return Decision(Verdict.RUN, trigger_key, "the policy's conditions are met")


@dataclass(frozen=True)
class Gate:
    metric: str
    higher_is_better: bool = True
    min_improvement: float = 0.0


@dataclass(frozen=True)
class GateResult:
    passed: bool
    candidate: float
    production: float
    improvement: float
    reason: str


def evaluate_gate(gate: Gate, candidate: float, production: float | None) -> GateResult:
    """The candidate passes when it beats production by at least `min_improvement` on the
    gate's metric (or when there is no production version to beat)."""
    if production is None:
        return GateResult(True, candidate, float("nan"), float("nan"), "no production version")
    improvement = candidate - production if gate.higher_is_better else production - candidate
    passed = improvement >= gate.min_improvement
    relation = ">=" if passed else "<"
    return GateResult(
        passed,
        candidate,
        production,
        improvement,
        f"{gate.metric}: candidate {candidate:.4g} vs production {production:.4g}, "
        f"improvement {improvement:.4g} {relation} required {gate.min_improvement:.4g}",
    )
