"""Conversion between the detector's domain and the protobuf contract: prediction logs in,
statuses, alerts and metric windows out (gRPC responses, events, checkpointed statuses)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from flywheel.common.v1 import types_pb2 as common
from flywheel.drift.v1 import drift_pb2 as api
from flywheel.drift.v1 import events_pb2 as events
from flywheel.drift.v1 import types_pb2 as types
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.prediction_logs import first_confidences, first_labels, input_matrix
from flywheel_common.timestamps import epoch
from flywheel_drift.detection import DriftTest, Finding, Kind, Severity
from flywheel_drift.domain import (
    Alert,
    ConceptStatus,
    DriftEvent,
    DriftStatus,
    LatencyQuantiles,
    MetricsWindow,
    PredictionBatch,
    WindowPicture,
    WindowRef,
)
from flywheel_drift.performance import Estimate
from flywheel_drift.profiles import FeatureCounts
from flywheel_drift.statistics import Correction
from flywheel_drift.windows import Observations

_OUTPUT = "label"
"""The output whose histogram a metrics window carries: the predicted class."""

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
    DriftTest.PCA_RECONSTRUCTION: types.DRIFT_TEST_PCA_RECONSTRUCTION,
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
_SEVERITIES = {
    Severity.NONE: types.SEVERITY_UNSPECIFIED,
    Severity.LOW: types.SEVERITY_LOW,
    Severity.MEDIUM: types.SEVERITY_MEDIUM,
    Severity.HIGH: types.SEVERITY_HIGH,
    Severity.CRITICAL: types.SEVERITY_CRITICAL,
}
_TEST_OF = {number: test for test, number in _TESTS.items()}
_CORRECTION_OF = {number: correction for correction, number in _CORRECTIONS.items()}
_KIND_OF = {number: kind for kind, number in _KINDS.items()}
_SEVERITY_OF = {number: severity for severity, number in _SEVERITIES.items()}


def batches(logs: Sequence[PredictionLog]) -> list[PredictionBatch]:
    """Prediction logs by model version (and shadow or not), each version's as columns."""
    grouped: dict[tuple[str, int, bool], list[PredictionLog]] = {}
    for entry in logs:
        grouped.setdefault((entry.model, entry.version, entry.shadow), []).append(entry)
    return [
        PredictionBatch(model, version, observations(entries), shadow)
        for (model, version, shadow), entries in grouped.items()
    ]


def observations(logs: Sequence[PredictionLog]) -> Observations:
    """One model version's prediction logs as columns (read in bulk, see prediction_logs)."""
    failed = np.array([entry.status_code != 0 for entry in logs], dtype=bool)
    succeeded = [entry for entry, bad in zip(logs, failed.tolist(), strict=True) if not bad]
    rows = np.zeros(len(logs), dtype=np.int64)
    succeeded_rows, features = input_matrix(succeeded)
    rows[~failed] = succeeded_rows
    labels = iter(first_labels(succeeded))
    confidence = np.full(len(logs), np.nan)
    succeeded_confidence = first_confidences(succeeded)
    if len(succeeded_confidence):
        confidence[~failed] = succeeded_confidence
    return Observations(
        request_ids=[entry.request_id for entry in logs],
        received_at=np.array(
            [stamp.seconds + stamp.nanos * 1e-9 for stamp in (entry.received_at for entry in logs)]
        ),
        rows=rows,
        features=features,
        predictions=["" if bad else next(labels) for bad in failed.tolist()],
        latency_ms=np.array(
            [entry.latency.seconds * 1e3 + entry.latency.nanos * 1e-6 for entry in logs]
        ),
        failed=failed,
        nan_flagged=np.array([entry.nan_flagged for entry in logs], dtype=bool),
        confidence=confidence if len(succeeded_confidence) else np.empty(0),
        traceparents=[entry.traceparent for entry in logs],
    )


def _seconds(stamp: Timestamp) -> float:
    return stamp.seconds + stamp.nanos / 1e9


def kind_of(number: int) -> Kind | None:
    """The kind an AlertKind number names; None for UNSPECIFIED or one this server lacks."""
    return _KIND_OF.get(types.AlertKind.ValueType(number))


def least_severity_of(number: int) -> Severity | None:
    """The least severity a Severity number admits: NONE for UNSPECIFIED, None for a number
    above every severity (nothing is that severe)."""
    if number > types.SEVERITY_CRITICAL:
        return None
    return _SEVERITY_OF.get(types.Severity.ValueType(number), Severity.NONE)


def window_ref_message(ref: WindowRef) -> types.WindowRef:
    return types.WindowRef(
        window_id=ref.window_id,
        kind=types.WINDOW_KIND_TIME if ref.timed else types.WINDOW_KIND_COUNT,
        index=ref.index,
        start=epoch(ref.start),
        end=epoch(ref.end),
    )


def window_ref_of(message: types.WindowRef) -> WindowRef:
    return WindowRef(
        window_id=message.window_id,
        timed=message.kind == types.WINDOW_KIND_TIME,
        index=message.index,
        start=_seconds(message.start),
        end=_seconds(message.end),
    )


def metrics_message(metrics: MetricsWindow) -> events.ModelMetricsWindow:
    latency = metrics.latency
    categories = sorted(metrics.predictions)
    message = events.ModelMetricsWindow(
        model=metrics.model,
        version=metrics.version,
        window=window_ref_message(metrics.window),
        request_count=metrics.request_count,
        error_count=metrics.error_count,
        latency=types.LatencyQuantiles(
            p50_ms=latency.p50_ms,
            p90_ms=latency.p90_ms,
            p99_ms=latency.p99_ms,
            mean_ms=latency.mean_ms,
            max_ms=latency.max_ms,
        ),
        output_histograms=[
            types.OutputHistogram(
                output=_OUTPUT,
                histogram=common.Histogram(
                    categories=categories,
                    counts=[metrics.predictions[k] for k in categories],
                ),
            )
        ],
        nan_flagged_count=metrics.nan_flagged_count,
        emitted_at=epoch(metrics.emitted_at),
    )
    labels = message.label_metrics
    labels.labeled_count = metrics.labeled_count
    if metrics.accuracy is not None:
        labels.accuracy = metrics.accuracy
    if metrics.mean_absolute_error is not None:
        labels.mean_absolute_error = metrics.mean_absolute_error
    if metrics.root_mean_squared_error is not None:
        labels.root_mean_squared_error = metrics.root_mean_squared_error
    if metrics.estimate is not None:
        message.estimate.CopyFrom(
            types.PerformanceEstimate(
                accuracy=metrics.estimate.accuracy,
                prediction_count=metrics.estimate.predictions,
                calibration_labels=metrics.estimate.calibration_labels,
            )
        )
    return message


def metrics_of(message: events.ModelMetricsWindow) -> MetricsWindow:
    latency = message.latency
    predictions: dict[str, int] = {}
    for output in message.output_histograms:
        if output.output == _OUTPUT:
            histogram = output.histogram
            predictions = dict(zip(histogram.categories, histogram.counts, strict=True))
    labels = message.label_metrics
    return MetricsWindow(
        model=message.model,
        version=message.version,
        window=window_ref_of(message.window),
        request_count=message.request_count,
        error_count=message.error_count,
        latency=LatencyQuantiles(
            latency.p50_ms, latency.p90_ms, latency.p99_ms, latency.mean_ms, latency.max_ms
        ),
        predictions=predictions,
        nan_flagged_count=message.nan_flagged_count,
        labeled_count=labels.labeled_count,
        accuracy=labels.accuracy if labels.HasField("accuracy") else None,
        emitted_at=_seconds(message.emitted_at),
        mean_absolute_error=labels.mean_absolute_error
        if labels.HasField("mean_absolute_error")
        else None,
        root_mean_squared_error=labels.root_mean_squared_error
        if labels.HasField("root_mean_squared_error")
        else None,
        estimate=Estimate(
            message.estimate.accuracy,
            message.estimate.prediction_count,
            message.estimate.calibration_labels,
        )
        if message.HasField("estimate")
        else None,
    )


def finding_message(finding: Finding) -> types.FeatureFinding:
    message = types.FeatureFinding(
        feature=finding.feature,
        feature_index=finding.feature_index,
        kind=_KINDS[finding.kind],
        test=_TESTS[finding.test],
        statistic=finding.statistic,
        threshold=finding.threshold,
        drifted=finding.drifted,
        severity=_SEVERITIES[finding.severity],
    )
    if finding.p_value is not None:
        message.p_value = finding.p_value
    if finding.adjusted_p_value is not None:
        message.adjusted_p_value = finding.adjusted_p_value
    return message


def finding_of(message: types.FeatureFinding) -> Finding:
    return Finding(
        feature=message.feature,
        feature_index=message.feature_index,
        kind=_KIND_OF[message.kind],
        test=_TEST_OF[message.test],
        statistic=message.statistic,
        threshold=message.threshold,
        drifted=message.drifted,
        severity=_SEVERITY_OF[message.severity],
        p_value=message.p_value if message.HasField("p_value") else None,
        adjusted_p_value=(
            message.adjusted_p_value if message.HasField("adjusted_p_value") else None
        ),
    )


def alert_message(alert: Alert) -> events.DriftAlert:
    message = events.DriftAlert(
        alert_id=alert.alert_id,
        model=alert.model,
        version=alert.version,
        kinds=sorted(_KINDS[kind] for kind in alert.kinds),
        severity=_SEVERITIES[alert.severity],
        findings=[finding_message(f) for f in alert.findings],
        features_tested=alert.features_tested,
        features_drifted=alert.features_drifted,
        alpha=alert.alpha,
        summary=alert.summary,
        occurred_at=epoch(alert.occurred_at),
        traceparent=alert.traceparent,
        report_url=alert.report_url,
    )
    if alert.window is not None:
        message.window.CopyFrom(window_ref_message(alert.window))
    if alert.correction is not None:
        message.correction = _CORRECTIONS[alert.correction]
    if alert.change_began_at is not None:
        message.change_began_at.CopyFrom(epoch(alert.change_began_at))
    return message


def alert_of(message: events.DriftAlert) -> Alert:
    return Alert(
        alert_id=message.alert_id,
        model=message.model,
        version=message.version,
        kinds=frozenset(_KIND_OF[number] for number in message.kinds),
        severity=_SEVERITY_OF[message.severity],
        summary=message.summary,
        occurred_at=_seconds(message.occurred_at),
        window=window_ref_of(message.window) if message.HasField("window") else None,
        findings=tuple(finding_of(f) for f in message.findings),
        features_tested=message.features_tested,
        features_drifted=message.features_drifted,
        correction=_CORRECTION_OF.get(message.correction),
        alpha=message.alpha,
        traceparent=message.traceparent,
        report_url=message.report_url,
        change_began_at=(
            _seconds(message.change_began_at) if message.HasField("change_began_at") else None
        ),
    )


def event_message(event: DriftEvent) -> Message:
    if isinstance(event, MetricsWindow):
        return metrics_message(event)
    return alert_message(event)


def status_message(status: DriftStatus) -> api.VersionDriftStatus:
    message = api.VersionDriftStatus(
        model=status.model,
        version=status.version,
        reference_loaded=status.reference_loaded,
        findings=[finding_message(f) for f in status.findings],
        last_alert_id=status.last_alert_id,
        windows_closed=status.windows_closed,
    )
    if status.latest_window is not None:
        message.latest_window.CopyFrom(window_ref_message(status.latest_window))
    if status.latest_metrics is not None:
        message.latest_metrics.CopyFrom(metrics_message(status.latest_metrics))
    message.latest_histograms.extend(_histograms(status.histograms))
    message.recent_metrics.extend(metrics_message(m) for m in status.recent_metrics)
    if status.alerted_window is not None:
        picture = status.alerted_window
        message.last_alerted_window.window.CopyFrom(window_ref_message(picture.window))
        message.last_alerted_window.findings.extend(finding_message(f) for f in picture.findings)
        message.last_alerted_window.histograms.extend(_histograms(picture.histograms))
    concept = status.concept
    # The state appears with the first label, as it did when the status was the message.
    if concept != ConceptStatus():
        message.concept_drift.labeled_count = concept.labeled_count
        message.concept_drift.error_estimate = concept.error_estimate
        message.concept_drift.change_detected = concept.change_detected
        if concept.last_change_at is not None:
            message.concept_drift.last_change_at.CopyFrom(epoch(concept.last_change_at))
    return message


def status_of(message: api.VersionDriftStatus) -> DriftStatus:
    concept, alerted = message.concept_drift, message.last_alerted_window
    return DriftStatus(
        model=message.model,
        version=message.version,
        reference_loaded=message.reference_loaded,
        latest_window=(
            window_ref_of(message.latest_window) if message.HasField("latest_window") else None
        ),
        findings=tuple(finding_of(f) for f in message.findings),
        latest_metrics=(
            metrics_of(message.latest_metrics) if message.HasField("latest_metrics") else None
        ),
        concept=ConceptStatus(
            labeled_count=concept.labeled_count,
            error_estimate=concept.error_estimate,
            change_detected=concept.change_detected,
            last_change_at=(
                _seconds(concept.last_change_at) if concept.HasField("last_change_at") else None
            ),
        ),
        last_alert_id=message.last_alert_id,
        windows_closed=message.windows_closed,
        histograms=_counts(message.latest_histograms),
        recent_metrics=tuple(metrics_of(m) for m in message.recent_metrics),
        alerted_window=(
            WindowPicture(
                window_ref_of(alerted.window),
                tuple(finding_of(f) for f in alerted.findings),
                _counts(alerted.histograms),
            )
            if message.HasField("last_alerted_window")
            else None
        ),
    )


def _histograms(counts: Sequence[FeatureCounts]) -> list[types.FeatureHistogram]:
    return [types.FeatureHistogram(feature=c.feature, counts=c.counts) for c in counts]


def _counts(histograms: Iterable[types.FeatureHistogram]) -> tuple[FeatureCounts, ...]:
    return tuple(FeatureCounts(h.feature, tuple(h.counts)) for h in histograms)
