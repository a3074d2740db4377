"""Metric windows as the trigger keeps them, and the one that completes the decay a
policy asks for."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flywheel_retrain.domain.decisions import DecayTracker, MetricWindow
from flywheel_retrain.domain.policy import DecayMetric, Policy


@dataclass(frozen=True)
class StoredWindow:
    """A metric window as the trigger keeps it: labels for the guards, values for decay."""

    model: str
    version: int
    window_id: str
    window_end: datetime
    labeled: int
    accuracy: float | None = None
    mean_absolute_error: float | None = None
    error_rate: float | None = None
    estimated_accuracy: float | None = None
    estimated_count: int = 0
    """Predictions the estimated accuracy covers."""

    def value(self, metric: DecayMetric) -> float | None:
        """The decay metric of the window, None when the window cannot tell."""
        if metric is DecayMetric.ACCURACY:
            return self.accuracy
        if metric is DecayMetric.ESTIMATED_ACCURACY:
            return self.estimated_accuracy
        if metric is DecayMetric.MEAN_ABSOLUTE_ERROR:
            return self.mean_absolute_error
        return self.error_rate

    def support(self, metric: DecayMetric) -> int:
        """How many predictions the metric's value stands on (what min_labeled_count counts):
        the labelled ones, or for the estimate those that logged their probabilities."""
        return self.estimated_count if metric is DecayMetric.ESTIMATED_ACCURACY else self.labeled


@dataclass(frozen=True)
class Decay:
    """A decay the policy asks a run for: the window completing it, and where the windows
    past the threshold began (the end of the window before them; when none is known, the
    end of the first of them, so what follows is past the threshold all the same)."""

    window: StoredWindow
    began_at: datetime


def decayed_window(
    policy: Policy, windows: list[StoredWindow], gate_score: float | None = None
) -> Decay | None:
    """The decay (windows oldest first) the policy asks for, if the last window completes
    it: a repeated evaluation names the same window, so it finds the run it started. Relative
    to the gate, only a version whose gate measured `gate_score` is watched."""
    rule = policy.decay_rule(gate_score)
    if not rule.enabled:
        return None
    tracker = DecayTracker(rule)
    fired: Decay | None = None
    began_at: datetime | None = None
    previous: StoredWindow | None = None
    for window in windows:
        observed = MetricWindow(
            window.window_id,
            window.model,
            window.version,
            window.value(policy.decay_trigger.metric),
            window.support(policy.decay_trigger.metric),
        )
        completes = tracker.observe(observed)
        if tracker.streak == 1 or (completes and rule.consecutive_windows == 1):
            began_at = (previous or window).window_end
        fired = Decay(window, began_at or window.window_end) if completes else None
        previous = window
    return fired
