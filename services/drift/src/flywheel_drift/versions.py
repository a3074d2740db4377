"""One model version under watch: its windows, reference, prediction baseline, change
detector and status, and what closing a window or scoring a label makes of them."""

from __future__ import annotations

from dataclasses import dataclass, field

from flywheel_drift.concept import ChangeDetector, detector
from flywheel_drift.detection import (
    DriftTest,
    Finding,
    Monitor,
    alerting,
    data_drift,
    prediction_drift,
    quality,
)
from flywheel_drift.domain import (
    Alert,
    DriftEvent,
    DriftStatus,
    MetricsWindow,
    ModelMonitor,
    window_alert,
)
from flywheel_drift.profiles import ReferenceProfile
from flywheel_drift.windows import ClosedWindow, VersionWindows


@dataclass(frozen=True)
class VersionSnapshot:
    """What a restart needs of a version (its reference is fetched again)."""

    windows: VersionWindows
    concept: ChangeDetector
    baseline_predictions: dict[str, int]
    status: DriftStatus


@dataclass
class VersionState:
    model: str
    version: int
    windows: VersionWindows
    concept: ChangeDetector
    status: DriftStatus
    profile: ReferenceProfile | None = None
    profile_requested: bool = False
    baseline_predictions: dict[str, int] = field(default_factory=dict)
    """The first window's prediction counts: what prediction drift is measured against."""

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
        self.status.reference_loaded = profile is not None

    def resume(self, snapshot: VersionSnapshot) -> None:
        self.windows = snapshot.windows
        self.concept = snapshot.concept
        self.baseline_predictions = dict(snapshot.baseline_predictions)
        self.status = snapshot.status
        self.status.reference_loaded = self.profile is not None

    def snapshot(self) -> VersionSnapshot:
        return VersionSnapshot(self.windows, self.concept, self.baseline_predictions, self.status)

    def close(self, window: ClosedWindow, monitor: Monitor, at: float) -> list[DriftEvent]:
        """A closed window's metrics, tested against the reference and the baseline; its
        alert follows when findings reach the monitor's alerting severity."""
        metrics = MetricsWindow.of(window, at)
        findings = self._findings(window, monitor)
        self.status.window_closed(metrics, findings)
        outgoing: list[DriftEvent] = [metrics]
        reported = alerting(findings, monitor)
        if reported:
            alert = window_alert(
                metrics.window, self.model, self.version, findings, reported, monitor, at
            )
            self.status.alerted(alert)
            outgoing.append(alert)
        return outgoing

    def _findings(self, window: ClosedWindow, monitor: Monitor) -> list[Finding]:
        findings: list[Finding] = []
        if self.profile is not None and len(window.features):
            findings += quality(self.profile, window.features, self.profile.datatype, monitor)
            if not any(f.test is DriftTest.SCHEMA_CHANGE for f in findings):
                findings += data_drift(self.profile, window.features, monitor)
        if not self.baseline_predictions:
            self.baseline_predictions = dict(window.predictions)
        else:
            moved = prediction_drift(self.baseline_predictions, window.predictions, monitor)
            if moved is not None:
                findings.append(moved)
        return findings

    def score(self, wrong: bool, at: float) -> Alert | None:
        """A prediction's label arrived: it counts toward the window's accuracy and feeds
        the change detector; a change it detects raises a concept-drift alert."""
        self.windows.add_label(not wrong)
        changed = self.concept.update(float(wrong))
        return self.status.labeled(self.concept.estimate, changed, at)
