"""One model version under watch: its windows, reference, prediction baseline, change
detector and status, and what closing a window or scoring a label makes of them."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from flywheel_drift.concept import ChangeDetector, detector
from flywheel_drift.detection import (
    MAX_ALARM_WINDOWS,
    DriftTest,
    Finding,
    Kind,
    Monitor,
    Severity,
    alerting,
    data_drift_and_counts,
    prediction_drift,
    quality,
)
from flywheel_drift.domain import (
    Alert,
    DriftEvent,
    DriftStatus,
    MetricsWindow,
    ModelMonitor,
    WindowRef,
    window_alert,
)
from flywheel_drift.performance import Calibration, ErrorScale, Task
from flywheel_drift.profiles import FeatureCounts, ReferenceProfile
from flywheel_drift.windows import ClosedWindow, VersionWindows

log = logging.getLogger(__name__)


MAX_UNTESTED_WINDOWS = 100
"""Closed windows a version keeps for its reference to arrive; past this (a registry down
for hours) the oldest goes untested, and the log says so, so memory stays bounded."""


@dataclass(frozen=True)
class VersionSnapshot:
    """What a restart needs of a version (its reference is fetched again)."""

    windows: VersionWindows
    concept: ChangeDetector
    baseline_predictions: dict[str, int]
    status: DriftStatus
    untested: tuple[ClosedWindow, ...] = ()
    drifted: tuple[bool, ...] = ()
    calibration: Calibration = field(default_factory=Calibration)
    error_scale: ErrorScale = field(default_factory=ErrorScale)


@dataclass
class VersionState:
    model: str
    version: int
    windows: VersionWindows
    concept: ChangeDetector
    status: DriftStatus
    profile: ReferenceProfile | None = None
    profile_requested: bool = False
    profile_known: bool = False
    """The registry answered: `profile` is the reference, or None as the version has none."""
    baseline_predictions: dict[str, int] = field(default_factory=dict)
    """The first window's prediction counts: what prediction drift is measured against."""
    untested: list[ClosedWindow] = field(default_factory=list)
    """Windows closed before the reference was known: tested against it once it is."""
    drifted: list[bool] = field(default_factory=list)
    """Whether each recent window drifted, oldest first: what the alarm policy counts."""
    calibration: Calibration = field(default_factory=Calibration)
    """How right a classifier's confidence was in the version's reference period."""
    error_scale: ErrorScale = field(default_factory=ErrorScale)
    """What a large error of a regression version is."""

    @classmethod
    def new(cls, model: str, version: int, monitor: ModelMonitor) -> VersionState:
        return cls(
            model,
            version,
            VersionWindows(model, version, monitor.window),
            detector(monitor.concept_detector),
            DriftStatus(model, version),
        )

    def profiled(self, profile: ReferenceProfile | None) -> None:
        self.profile = profile
        self.profile_known = True
        self.status.reference_loaded = profile is not None

    def resume(self, snapshot: VersionSnapshot) -> None:
        self.windows = snapshot.windows
        self.concept = snapshot.concept
        self.baseline_predictions = dict(snapshot.baseline_predictions)
        self.status = snapshot.status
        self.status.reference_loaded = self.profile is not None
        self.untested = list(snapshot.untested)
        self.drifted = list(snapshot.drifted)
        self.calibration = snapshot.calibration
        self.error_scale = snapshot.error_scale

    def snapshot(self) -> VersionSnapshot:
        return VersionSnapshot(
            self.windows,
            self.concept,
            self.baseline_predictions,
            self.status,
            tuple(self.untested),
            tuple(self.drifted),
            self.calibration,
            self.error_scale,
        )

    def close(
        self, window: ClosedWindow, monitor: Monitor, task: Task, at: float
    ) -> list[DriftEvent]:
        """A closed window's metrics, tested against the reference and the baseline; its
        alert follows when findings reach the monitor's alerting severity. Before the
        reference is known the window's inputs wait for it (`test_untested`)."""
        metrics = MetricsWindow.of(window, at, task, self.calibration.estimate(window.confidence))
        findings = self._prediction_findings(window, monitor)
        histograms: tuple[FeatureCounts, ...] = ()
        if len(window.features):
            if self.profile is not None:
                tested, histograms = self._reference_findings(window, self.profile, monitor)
                findings = tested + findings
            elif not self.profile_known:
                self._keep_untested(window)
        self.status.window_closed(metrics, findings, histograms)
        reported = alerting(findings, monitor)
        self.drifted = [*self.drifted, bool(reported)][-MAX_ALARM_WINDOWS:]
        critical = any(f.severity is Severity.CRITICAL for f in reported)
        if reported and not critical and not monitor.alarm.alarms(self.drifted):
            return [metrics]  # drifted, but not yet as often as the policy asks
        return [metrics, *self._alert(window, findings, reported, monitor, at)]

    def test_untested(self, monitor: Monitor, at: float) -> list[DriftEvent]:
        """Once the reference is known, the windows that closed before it, tested against
        it (with nothing to test against when the version has none)."""
        if not self.profile_known or not self.untested:
            return []
        waiting, self.untested = self.untested, []
        if self.profile is None:
            return []
        outgoing: list[DriftEvent] = []
        for window in waiting:
            findings, histograms = self._reference_findings(window, self.profile, monitor)
            ref = WindowRef.of(window)
            if ref == self.status.latest_window:
                self.status.findings = tuple(findings) + tuple(
                    f for f in self.status.findings if f.kind is Kind.PREDICTION
                )
                self.status.histograms = histograms
            reported = alerting(findings, monitor)
            outgoing += self._alert(window, findings, reported, monitor, at, late=True)
        return outgoing

    def _keep_untested(self, window: ClosedWindow) -> None:
        self.untested.append(window)
        if len(self.untested) > MAX_UNTESTED_WINDOWS:
            dropped = self.untested.pop(0)
            log.warning(
                "window closed too long before its reference arrived: not tested",
                extra={"model": self.model, "version": self.version, "window": dropped.index},
            )

    def _alert(
        self,
        window: ClosedWindow,
        findings: list[Finding],
        reported: list[Finding],
        monitor: Monitor,
        at: float,
        late: bool = False,
    ) -> list[DriftEvent]:
        """The alert of a window whose `reported` findings (of its `findings`) alert."""
        if not reported:
            return []
        alert = window_alert(
            WindowRef.of(window), self.model, self.version, findings, reported, monitor, at,
            late=late, traceparent=window.traceparent,
        )  # fmt: skip
        self.status.alerted(alert)
        return [alert]

    @staticmethod
    def _reference_findings(
        window: ClosedWindow, profile: ReferenceProfile, monitor: Monitor
    ) -> tuple[list[Finding], tuple[FeatureCounts, ...]]:
        """The window's quality and drift findings, and its features' counts (none after a
        schema change)."""
        findings = quality(profile, window.features, profile.datatype, monitor)
        if any(f.test is DriftTest.SCHEMA_CHANGE for f in findings):
            return findings, ()
        tested = data_drift_and_counts(profile, window.features, monitor)
        return findings + tested.findings, tested.counts

    def _prediction_findings(self, window: ClosedWindow, monitor: Monitor) -> list[Finding]:
        findings: list[Finding] = []
        if not self.baseline_predictions:
            self.baseline_predictions = dict(window.predictions)
        else:
            moved = prediction_drift(self.baseline_predictions, window.predictions, monitor)
            if moved is not None:
                findings.append(moved)
        return findings

    def score(
        self,
        prediction: str,
        label: str,
        confidence: float | None,
        task: Task,
        at: float,
        predicted_at: float = 0.0,
    ) -> Alert | None:
        """A prediction (made at `predicted_at`) got its label `at`: it counts toward the
        window's accuracy (or error) and feeds the change detector; a change it detects
        raises a concept-drift alert saying when the change began. A classifier's label also
        calibrates its confidence during the reference period."""
        if task is Task.REGRESSION:
            error = _numeric_error(prediction, label)
            if error is None:
                return None
            self.windows.add_label(error == 0.0, error)
            signal = self.error_scale.signal(abs(error))
            if signal is None:
                return None  # the reference period: what a large error is, being learnt
        else:
            correct = prediction == label
            self.windows.add_label(correct)
            self.calibration.learn(confidence, correct)
            signal = float(not correct)
        changed = self.concept.update(signal, predicted_at)
        return self.status.labeled(self.concept.estimate, changed, at, self.concept.change_began_at)


def _numeric_error(prediction: str, label: str) -> float | None:
    """How far a numeric prediction was from its label; None when either is not a number."""
    try:
        error = float(prediction) - float(label)
    except ValueError:
        return None
    return error if math.isfinite(error) else None
