"""What the detector reports of a model version: windows, metrics, status and alerts.

Plain values, free of transport and storage: the detector produces them, converters turn them
into the protobuf contract (gRPC responses, events, the status kept in checkpoints). Times
are seconds since the epoch, as everywhere in the detector.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from flywheel_drift.detection import MULTIVARIATE, Finding, Kind, Monitor, Severity
from flywheel_drift.performance import Estimate, Task
from flywheel_drift.profiles import FeatureCounts
from flywheel_drift.statistics import Correction
from flywheel_drift.windows import ClosedWindow, Observations, WindowPolicy


@dataclass(frozen=True)
class ModelMonitor:
    """A model's monitor: the detection rules, its windows, and the label join settings."""

    detection: Monitor = field(default_factory=Monitor)
    window: WindowPolicy = field(default_factory=WindowPolicy)
    concept_detector: str = "adwin"
    label_wait_seconds: float = 3600.0
    task: Task = Task.CLASSIFICATION


@dataclass(frozen=True)
class PredictionBatch:
    """Predictions of one model version, read from a batch of prediction logs."""

    model: str
    version: int
    observations: Observations
    shadow: bool = False
    """Shadow copies: the deployer judges them, the detector does not alert on them."""


@dataclass(frozen=True)
class WindowRef:
    """Identity and bounds of one closed window."""

    window_id: str
    timed: bool
    """A time window, else a count window."""
    index: int
    start: float
    end: float

    @classmethod
    def of(cls, window: ClosedWindow) -> WindowRef:
        return cls(window.window_id, window.timed, window.index, window.start, window.end)


@dataclass(frozen=True)
class LatencyQuantiles:
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p99_ms: float = 0.0
    mean_ms: float = 0.0
    max_ms: float = 0.0


@dataclass(frozen=True)
class MetricsWindow:
    """Serving metrics of one model version over one closed window (an event)."""

    model: str
    version: int
    window: WindowRef
    request_count: int
    error_count: int
    latency: LatencyQuantiles
    predictions: Mapping[str, int]
    """How often each class was predicted (the histogram of the output "label")."""
    nan_flagged_count: int
    labeled_count: int
    accuracy: float | None
    emitted_at: float
    mean_absolute_error: float | None = None
    root_mean_squared_error: float | None = None
    estimate: Estimate | None = None

    @classmethod
    def of(
        cls, window: ClosedWindow, at: float, task: Task, estimate: Estimate | None
    ) -> MetricsWindow:
        latency = window.latency_quantiles()
        regression = task is Task.REGRESSION
        return cls(
            model=window.model,
            version=window.version,
            window=WindowRef.of(window),
            request_count=window.requests,
            error_count=window.errors,
            latency=LatencyQuantiles(
                latency["p50"], latency["p90"], latency["p99"], latency["mean"], latency["max"]
            ),
            predictions=dict(window.predictions),
            nan_flagged_count=window.nan_flagged,
            labeled_count=window.labeled,
            accuracy=None if regression else window.accuracy,
            emitted_at=at,
            mean_absolute_error=window.mean_absolute_error if regression else None,
            root_mean_squared_error=window.root_mean_squared_error if regression else None,
            estimate=None if regression else estimate,
        )


@dataclass(frozen=True)
class Alert:
    """Drift found in a model version (an event): in one window, or in its error stream."""

    alert_id: str
    """Deterministic, so a replayed window or label stream raises the same id."""
    model: str
    version: int
    kinds: frozenset[Kind]
    severity: Severity
    summary: str
    occurred_at: float
    window: WindowRef | None = None
    findings: tuple[Finding, ...] = ()
    """The findings that crossed their threshold."""
    features_tested: int = 0
    features_drifted: int = 0
    correction: Correction | None = None
    alpha: float = 0.0
    traceparent: str = ""
    """The trace the alert continues: of the request that closed its window."""
    report_url: str = ""
    """Where the drift service serves the HTML report of the alert's window."""
    change_began_at: float | None = None
    """Concept drift: when the change detector estimates the new concept began."""


DriftEvent = MetricsWindow | Alert
"""What the detector publishes; its subject is the event's model."""


def window_alert(
    ref: WindowRef,
    model: str,
    version: int,
    findings: Sequence[Finding],
    reported: Sequence[Finding],
    monitor: Monitor,
    at: float,
    late: bool = False,
    traceparent: str = "",
) -> Alert:
    """The alert for a window whose `reported` findings (of all its `findings`) alert.
    `late`: tested against a reference that arrived after the window closed, so its id
    differs from the alert the window may have raised when it closed (prediction drift)."""
    severity = max(f.severity for f in reported)
    # The multivariate test's joint of the numeric features counts as one feature, so a
    # change only it sees still reaches a retrain policy that needs a drifted feature.
    drifted = {f.feature for f in reported if f.feature_index >= 0 or f.feature == MULTIVARIATE}
    tested = {f.feature for f in findings if f.kind is Kind.DATA}
    summary = "; ".join(
        f"{f.feature} {f.test.value} {f.statistic:.4g}"
        + (f" (p={f.adjusted_p_value:.2g})" if f.adjusted_p_value is not None else "")
        for f in reported[:5]
    )
    return Alert(
        alert_id=f"{ref.window_id}:{'late-drift' if late else 'drift'}",
        model=model,
        version=version,
        kinds=frozenset(f.kind for f in reported),
        severity=max(severity, Severity.LOW),
        summary=summary,
        occurred_at=at,
        window=ref,
        findings=tuple(reported),
        features_tested=len(tested),
        features_drifted=len(drifted),
        correction=monitor.correction,
        alpha=monitor.thresholds.alpha,
        traceparent=traceparent,
    )


@dataclass
class ConceptStatus:
    """The change detector over a version's error stream, as last updated by a label."""

    labeled_count: int = 0
    error_estimate: float = 0.0
    change_detected: bool = False
    """A change was detected since the version was first seen."""
    last_change_at: float | None = None


@dataclass(frozen=True)
class WindowPicture:
    """Every test result of one window and its features in their reference bins: what the
    window's report shows."""

    window: WindowRef
    findings: tuple[Finding, ...]
    histograms: tuple[FeatureCounts, ...]


RECENT_WINDOWS = 50
"""Metric windows a status keeps, for the report's charts over time."""


@dataclass
class DriftStatus:
    """The latest drift picture of one model version, kept up to date by the detector."""

    model: str
    version: int
    reference_loaded: bool = False
    latest_window: WindowRef | None = None
    findings: tuple[Finding, ...] = ()
    """Every test result of the latest window, drifted or not."""
    latest_metrics: MetricsWindow | None = None
    concept: ConceptStatus = field(default_factory=ConceptStatus)
    last_alert_id: str = ""
    windows_closed: int = 0
    histograms: tuple[FeatureCounts, ...] = ()
    """Each feature of the latest window in its reference bins (none before the reference)."""
    recent_metrics: tuple[MetricsWindow, ...] = ()
    """The metrics of the last `RECENT_WINDOWS` windows, oldest first."""
    alerted_window: WindowPicture | None = None
    """The newest window that alerted as the latest one, kept for its report."""

    def window_closed(
        self,
        metrics: MetricsWindow,
        findings: Sequence[Finding],
        histograms: Sequence[FeatureCounts] = (),
    ) -> None:
        self.latest_window = metrics.window
        self.latest_metrics = metrics
        self.findings = tuple(findings)
        self.histograms = tuple(histograms)
        self.recent_metrics = (*self.recent_metrics, metrics)[-RECENT_WINDOWS:]
        self.windows_closed += 1

    def labeled(
        self, error_estimate: float, changed: bool, at: float, began_at: float = 0.0
    ) -> Alert | None:
        """One more label scored; the alert a detected change (which began at `began_at`,
        0 when unknown) raises."""
        concept = self.concept
        concept.labeled_count += 1
        concept.error_estimate = error_estimate
        if not changed:
            return None
        concept.change_detected = True
        concept.last_change_at = at
        alert = Alert(
            alert_id=f"{self.model}:{self.version}:concept:{concept.labeled_count}",
            model=self.model,
            version=self.version,
            kinds=frozenset({Kind.CONCEPT}),
            severity=Severity.HIGH,
            summary=(
                f"error rate changed: now about {error_estimate:.3f} "
                f"after {concept.labeled_count} labels"
            ),
            occurred_at=at,
            change_began_at=began_at or None,
        )
        self.alerted(alert)
        return alert

    def alerted(self, alert: Alert) -> None:
        self.last_alert_id = alert.alert_id
        if alert.window is not None and alert.window == self.latest_window:
            self.alerted_window = WindowPicture(alert.window, self.findings, self.histograms)
