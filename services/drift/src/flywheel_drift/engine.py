"""The drift detector's use case: prediction logs and labels in, windows and alerts out.

Transport-free: the stream layer hands decoded messages in batches and publishes what comes
back. Per model version it keeps the open window, the reference profile (loaded from the
registry on first sight), the first window's prediction counts (the prediction-drift
baseline), a change detector over the error stream, and the latest status.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from google.protobuf.message import Message
from opentelemetry.metrics import CallbackOptions
from opentelemetry.metrics import Observation as Reading

from flywheel.common.v1 import types_pb2 as common
from flywheel.drift.v1 import drift_pb2 as api
from flywheel.drift.v1 import events_pb2 as events
from flywheel.drift.v1 import types_pb2 as types
from flywheel.drift.v1.ground_truth_pb2 import GroundTruth
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.errors import NotFound
from flywheel_common.prediction_logs import first_labels, ground_truth_label, input_matrix
from flywheel_common.timestamps import epoch, now
from flywheel_drift import checkpoints
from flywheel_drift.concept import ChangeDetector, detector, detector_from_checkpoint
from flywheel_drift.detection import (
    DriftTest,
    Finding,
    Kind,
    Monitor,
    Severity,
    alerting,
    data_drift,
    prediction_drift,
    quality,
)
from flywheel_drift.profiles import ReferenceProfile
from flywheel_drift.statistics import Correction
from flywheel_drift.windows import (
    ClosedWindow,
    LabelJoin,
    Observations,
    Pending,
    VersionWindows,
    WindowPolicy,
)

log = logging.getLogger(__name__)

LoadProfile = Callable[[str, int], Awaitable[ReferenceProfile | None]]
Outgoing = list[tuple[Message, str]]
"""Events to publish with their subject (the model)."""


@dataclass
class VersionState:
    model: str
    version: int
    windows: VersionWindows
    concept: ChangeDetector
    profile: ReferenceProfile | None = None
    profile_requested: bool = False
    baseline_predictions: dict[str, int] = field(default_factory=dict)
    status: api.VersionDriftStatus = field(default_factory=api.VersionDriftStatus)


@dataclass(frozen=True)
class ModelMonitor:
    """A model's monitor: the detection rules, its windows, and the label join settings."""

    detection: Monitor = field(default_factory=Monitor)
    window: WindowPolicy = field(default_factory=WindowPolicy)
    concept_detector: str = "adwin"
    label_wait_seconds: float = 3600.0


class DriftEngine:
    def __init__(
        self,
        load_profile: LoadProfile,
        monitors: Callable[[str], ModelMonitor],
        label_wait_seconds: float = 3600.0,
        max_alerts_kept: int = 10_000,
    ) -> None:
        self._load_profile = load_profile
        self._monitors = monitors
        self._versions: dict[tuple[str, int], VersionState] = {}
        self.changed: set[tuple[str, int]] = set()
        """Versions whose state changed since the stream last checkpointed them."""
        self.alerts: deque[events.DriftAlert] = deque(maxlen=max_alerts_kept)
        """The newest alerts raised, oldest first."""
        self._join = LabelJoin(label_wait_seconds)
        self._loading: set[asyncio.Task[None]] = set()

    def state(self, model: str, version: int) -> VersionState:
        key = (model, version)
        found = self._versions.get(key)
        if found is None:
            monitor = self._monitors(model)
            found = VersionState(
                model,
                version,
                VersionWindows(model, version, monitor.window),
                detector(monitor.concept_detector),
            )
            found.status.model, found.status.version = model, version
            self._versions[key] = found
        if not found.profile_requested:
            found.profile_requested = True
            task = asyncio.create_task(self._fetch_profile(found))
            self._loading.add(task)
            task.add_done_callback(self._loading.discard)
        return found

    async def _fetch_profile(self, state: VersionState) -> None:
        try:
            state.profile = await self._load_profile(state.model, state.version)
        except NotFound:
            log.info("no reference sample", extra={"model": state.model, "version": state.version})
        except Exception as exc:
            log.warning("reference sample not loaded; retrying with the next batch",
                        extra={"model": state.model, "error": str(exc)})  # fmt: skip
            state.profile_requested = False
        state.status.reference_loaded = state.profile is not None

    def observe(self, logs: Sequence[PredictionLog]) -> Outgoing:
        """A batch of prediction logs; returns the events of the windows it closed and of
        concept drift found by labels that were waiting for these predictions."""
        by_version: dict[tuple[str, int], list[PredictionLog]] = {}
        for entry in logs:
            if not entry.shadow:  # shadow traffic is judged by the deployer, not alerted on
                by_version.setdefault((entry.model, entry.version), []).append(entry)
        outgoing: Outgoing = []
        for (model, version), entries in by_version.items():
            batch = observations(entries)
            waiting = [
                (request_id, Pending(model, version, prediction, received))
                for request_id, prediction, received, failed in zip(
                    batch.request_ids,
                    batch.predictions,
                    batch.received_at.tolist(),
                    batch.failed.tolist(),
                    strict=True,
                )
                if request_id and not failed
            ]
            for joined in self._join.predictions(waiting):
                outgoing += self._score(*joined)
            state = self.state(model, version)
            self.changed.add((model, version))
            for window in state.windows.add(batch):
                outgoing += self._close(state, window)
        return outgoing

    def flush(self, now: float, grace: float = 0.0) -> Outgoing:
        """Close the time windows whose end passed more than `grace` seconds ago though no
        prediction came since (a model whose traffic stopped still reports its last window),
        and forget predictions and labels that waited past the label wait."""
        outgoing: Outgoing = []
        for key, state in list(self._versions.items()):
            for window in state.windows.flush(now, grace):
                self.changed.add(key)
                outgoing += self._close(state, window)
        self._join.expire(now)
        return outgoing

    def label(self, truth: GroundTruth, at: float) -> Outgoing:
        label = ground_truth_label(truth)
        if label is None:
            return []
        joined = self._join.label(truth.request_id, label, at)
        self._join.expire(at)
        if joined is None:
            return []
        return self._score(*joined)

    def _score(self, pending: Pending, label: str) -> Outgoing:
        state = self.state(pending.model, pending.version)
        self.changed.add((pending.model, pending.version))
        wrong = pending.prediction != label
        state.windows.add_label(not wrong)
        changed = state.concept.update(float(wrong))
        concept = state.status.concept_drift
        concept.labeled_count += 1
        concept.error_estimate = state.concept.estimate
        if not changed:
            return []
        concept.change_detected = True
        concept.last_change_at.CopyFrom(now())
        alert = events.DriftAlert(
            alert_id=f"{pending.model}:{pending.version}:concept:{concept.labeled_count}",
            model=pending.model,
            version=pending.version,
            kinds=[types.ALERT_KIND_CONCEPT],
            severity=types.SEVERITY_HIGH,
            summary=(
                f"error rate changed: now about {state.concept.estimate:.3f} "
                f"after {concept.labeled_count} labels"
            ),
            occurred_at=now(),
        )
        state.status.last_alert_id = alert.alert_id
        self.alerts.append(alert)
        return [(alert, pending.model)]

    def _close(self, state: VersionState, window: ClosedWindow) -> Outgoing:
        monitor = self._monitors(state.model).detection
        ref = types.WindowRef(
            window_id=window.window_id,
            kind=types.WINDOW_KIND_TIME if window.timed else types.WINDOW_KIND_COUNT,
            index=window.index,
            start=epoch(window.start),
            end=epoch(window.end),
        )
        metrics = _metrics(state.model, state.version, ref, window)
        outgoing: Outgoing = [(metrics, state.model)]
        findings: list[Finding] = []
        if state.profile is not None and len(window.features):
            findings += quality(state.profile, window.features, state.profile.datatype, monitor)
            if not any(f.test is DriftTest.SCHEMA_CHANGE for f in findings):
                findings += data_drift(state.profile, window.features, monitor)
        if not state.baseline_predictions:
            state.baseline_predictions = dict(window.predictions)
        else:
            moved = prediction_drift(state.baseline_predictions, window.predictions, monitor)
            if moved is not None:
                findings.append(moved)
        status = state.status
        status.latest_window.CopyFrom(ref)
        status.latest_metrics.CopyFrom(metrics)
        del status.findings[:]
        status.findings.extend(_finding(f) for f in findings)
        status.windows_closed += 1
        reported = alerting(findings, monitor)
        if reported:
            alert = _alert(state, ref, findings, reported, monitor)
            status.last_alert_id = alert.alert_id
            self.alerts.append(alert)
            outgoing.append((alert, state.model))
        return outgoing

    def snapshot(self, model: str, version: int) -> bytes:
        """What a restart needs of a version: its open window, the prediction baseline, the
        change detector and its status (the profile is fetched again from the registry)."""
        state = self._versions[(model, version)]
        return checkpoints.encode(
            {
                "windows": state.windows.checkpoint(),
                "concept": state.concept.checkpoint(),
                "baseline_predictions": state.baseline_predictions,
                "status": np.frombuffer(state.status.SerializeToString(), dtype=np.uint8),
            }
        )

    def restore(self, model: str, version: int, snapshot: bytes) -> None:
        """Resume a version from `snapshot` (written by this service, see `snapshot`)."""
        document = checkpoints.decode(snapshot)
        state = self.state(model, version)
        state.windows = VersionWindows.from_checkpoint(model, version, document["windows"])
        state.concept = detector_from_checkpoint(document["concept"])
        state.baseline_predictions = dict(document["baseline_predictions"])
        state.status.ParseFromString(document["status"].tobytes())
        state.status.reference_loaded = state.profile is not None

    @property
    def join(self) -> LabelJoin:
        """Predictions and labels waiting for each other; the stream checkpoints its
        changes with the windows and replays them on restart."""
        return self._join

    def p_values(self, _: CallbackOptions) -> Iterable[Reading]:
        """The latest window's adjusted p-value of each tested feature, for dashboards."""
        for (model, version), state in list(self._versions.items()):
            for finding in state.status.findings:
                if finding.HasField("adjusted_p_value"):
                    yield Reading(
                        finding.adjusted_p_value,
                        {"model": model, "version": str(version), "feature": finding.feature},
                    )

    def statuses(self, model: str, version: int = 0) -> list[api.VersionDriftStatus]:
        return [
            s.status
            for (m, v), s in sorted(self._versions.items())
            if m == model and (not version or v == version)
        ]


def observations(logs: Sequence[PredictionLog]) -> Observations:
    """One model version's prediction logs as columns (read in bulk, see prediction_logs)."""
    failed = np.array([entry.status_code != 0 for entry in logs], dtype=bool)
    succeeded = [entry for entry, bad in zip(logs, failed.tolist(), strict=True) if not bad]
    rows = np.zeros(len(logs), dtype=np.int64)
    succeeded_rows, features = input_matrix(succeeded)
    rows[~failed] = succeeded_rows
    labels = iter(first_labels(succeeded))
    return Observations(
        request_ids=[entry.request_id for entry in logs],
        received_at=np.array(
            [entry.received_at.seconds + entry.received_at.nanos * 1e-9 for entry in logs]
        ),
        rows=rows,
        features=features,
        predictions=["" if bad else next(labels) for bad in failed.tolist()],
        latency_ms=np.array(
            [entry.latency.seconds * 1e3 + entry.latency.nanos * 1e-6 for entry in logs]
        ),
        failed=failed,
        nan_flagged=np.array([entry.nan_flagged for entry in logs], dtype=bool),
    )


def _metrics(
    model: str, version: int, ref: types.WindowRef, window: ClosedWindow
) -> events.ModelMetricsWindow:
    latency = window.latency_quantiles()
    metrics = events.ModelMetricsWindow(
        model=model,
        version=version,
        window=ref,
        request_count=window.requests,
        error_count=window.errors,
        latency=types.LatencyQuantiles(
            p50_ms=latency["p50"],
            p90_ms=latency["p90"],
            p99_ms=latency["p99"],
            mean_ms=latency["mean"],
            max_ms=latency["max"],
        ),
        output_histograms=[
            types.OutputHistogram(
                output="label",
                histogram=common.Histogram(
                    categories=sorted(window.predictions),
                    counts=[window.predictions[k] for k in sorted(window.predictions)],
                ),
            )
        ],
        nan_flagged_count=window.nan_flagged,
        emitted_at=now(),
    )
    metrics.label_metrics.labeled_count = window.labeled
    if window.accuracy is not None:
        metrics.label_metrics.accuracy = window.accuracy
    return metrics


_TESTS = {
    DriftTest.KOLMOGOROV_SMIRNOV: types.DRIFT_TEST_KOLMOGOROV_SMIRNOV,
    DriftTest.CHI_SQUARE: types.DRIFT_TEST_CHI_SQUARE,
    DriftTest.POPULATION_STABILITY_INDEX: types.DRIFT_TEST_POPULATION_STABILITY_INDEX,
    DriftTest.WASSERSTEIN: types.DRIFT_TEST_WASSERSTEIN,
    DriftTest.JENSEN_SHANNON: types.DRIFT_TEST_JENSEN_SHANNON,
    DriftTest.NAN_RATE: types.DRIFT_TEST_NAN_RATE,
    DriftTest.INF_RATE: types.DRIFT_TEST_INF_RATE,
    DriftTest.OUT_OF_RANGE_RATE: types.DRIFT_TEST_OUT_OF_RANGE_RATE,
    DriftTest.SCHEMA_CHANGE: types.DRIFT_TEST_SCHEMA_CHANGE,
}
_CORRECTIONS = {
    Correction.NONE: types.MULTIPLE_TESTING_CORRECTION_NONE,
    Correction.BONFERRONI: types.MULTIPLE_TESTING_CORRECTION_BONFERRONI,
    Correction.BENJAMINI_HOCHBERG: types.MULTIPLE_TESTING_CORRECTION_BENJAMINI_HOCHBERG,
}
_KINDS = {
    Kind.DATA: types.ALERT_KIND_DATA,
    Kind.PREDICTION: types.ALERT_KIND_PREDICTION,
    Kind.QUALITY: types.ALERT_KIND_QUALITY,
    Kind.CONCEPT: types.ALERT_KIND_CONCEPT,
}


def _finding(finding: Finding) -> types.FeatureFinding:
    message = types.FeatureFinding(
        feature=finding.feature,
        feature_index=finding.feature_index,
        kind=_KINDS[finding.kind],
        test=_TESTS[finding.test],
        statistic=finding.statistic,
        threshold=finding.threshold,
        drifted=finding.drifted,
        severity=int(finding.severity),  # type: ignore[arg-type]
    )
    if finding.p_value is not None:
        message.p_value = finding.p_value
    if finding.adjusted_p_value is not None:
        message.adjusted_p_value = finding.adjusted_p_value
    return message


def _alert(
    state: VersionState,
    ref: types.WindowRef,
    findings: list[Finding],
    reported: list[Finding],
    monitor: Monitor,
) -> events.DriftAlert:
    severity = max(f.severity for f in reported)
    features = {f.feature for f in reported if f.feature_index >= 0}
    tested = {f.feature for f in findings if f.kind is Kind.DATA}
    summary = "; ".join(
        f"{f.feature} {f.test.value} {f.statistic:.4g}"
        + (f" (p={f.adjusted_p_value:.2g})" if f.adjusted_p_value is not None else "")
        for f in reported[:5]
    )
    return events.DriftAlert(
        alert_id=f"{ref.window_id}:drift",
        model=state.model,
        version=state.version,
        window=ref,
        kinds=sorted({_KINDS[f.kind] for f in reported}),
        severity=int(severity if severity > Severity.NONE else Severity.LOW),  # type: ignore[arg-type]
        findings=[_finding(f) for f in reported],
        features_tested=len(tested),
        features_drifted=len(features),
        correction=_CORRECTIONS[monitor.correction],
        alpha=monitor.thresholds.alpha,
        summary=summary,
        occurred_at=now(),
    )
