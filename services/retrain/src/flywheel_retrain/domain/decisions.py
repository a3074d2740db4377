"""When to retrain, as pure decisions: which alerts and decaying metrics warrant a run,
and the guards that let one start now."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum


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
class FollowUpRule:
    enabled: bool = False
    growth: int = 4
    """How many times the rows a version learnt from must have been labelled since its
    change before it is trained again."""


@dataclass(frozen=True)
class Guards:
    cooldown: timedelta = timedelta(hours=1)
    max_concurrent_runs: int = 1
    min_new_labeled_samples: int = 0
    queue_when_busy: bool = False
    """A trigger that finds the runs in progress at the limit queues one run behind them
    instead of starting none: a change detected during a run is retrained for after it."""


@dataclass(frozen=True)
class Alert:
    alert_id: str
    model: str
    version: int
    severity: Severity
    kinds: frozenset[str]
    drifted_features: int
    traceparent: str = ""
    """The trace of the request whose window drifted, through the detector's span."""
    change_began_at: datetime | None = None
    """Concept drift: when the detector estimates the new concept began."""


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
    """As many runs as allowed are in progress, and one already waits behind them."""
    QUEUED = "queued"
    """As many runs as allowed are in progress: the run starts when one ends."""
    TOO_FEW_LABELS = "too_few_labels"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    trigger_key: str
    reason: str

    @property
    def run(self) -> bool:
        """Whether a run is created (now or to start when the runs in progress end)."""
        return self.verdict in (Verdict.RUN, Verdict.QUEUED)


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


def follow_up_due(rule: FollowUpRule, learnt_from: int, labeled_since_change: int) -> bool:
    """Whether a version trained on `learnt_from` rows since a change is due to be trained
    again, `labeled_since_change` rows after the change."""
    return rule.enabled and learnt_from > 0 and labeled_since_change >= rule.growth * learnt_from


@dataclass(frozen=True)
class History:
    """What the guards need to know about a model's runs."""

    trigger_keys: frozenset[str] = frozenset()
    """Every trigger that has already started a run (any outcome)."""
    running: int = 0
    """Unfinished runs, queued ones included."""
    last_started_at: datetime | None = None
    new_labeled_samples: int = 0


def decide(trigger_key: str, guards: Guards, history: History, now: datetime) -> Decision:
    """Whether a trigger that met the policy may start a run now."""
    if trigger_key in history.trigger_keys:
        return Decision(Verdict.DUPLICATE, trigger_key, "a run for this trigger exists")
    last = history.last_started_at
    remaining = guards.cooldown - (now - last) if last is not None else timedelta(0)
    cooling = remaining > timedelta(0)
    if history.running >= guards.max_concurrent_runs:
        # One run may wait beyond the limit; the engine starts it when a slot frees.
        waits = guards.queue_when_busy and history.running == guards.max_concurrent_runs
        if waits and not cooling:
            return Decision(
                Verdict.QUEUED,
                trigger_key,
                f"{history.running} run(s) in progress: this one starts when one ends",
            )
        return Decision(
            Verdict.BUSY,
            trigger_key,
            f"{history.running} run(s) in progress, the policy allows {guards.max_concurrent_runs}",
        )
    if cooling:
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
