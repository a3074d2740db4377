"""The rules of a version's status: what a closed window and a scored label make of it, which
alert each raises, and a snapshot that resumes it."""

from __future__ import annotations

import numpy as np

from flywheel_drift import snapshots
from flywheel_drift.detection import DriftTest, Finding, Kind, Monitor, Severity
from flywheel_drift.domain import (
    Alert,
    DriftStatus,
    MetricsWindow,
    ModelMonitor,
    WindowRef,
    window_alert,
)
from flywheel_drift.performance import LabelTally, Task
from flywheel_drift.statistics import Correction
from flywheel_drift.versions import VersionState
from flywheel_drift.windows import ClosedWindow

REF = WindowRef("iris:1:0", timed=False, index=0, start=10.0, end=20.0)


def finding(
    feature: str, index: int, kind: Kind, severity: Severity, drifted: bool = True
) -> Finding:
    return Finding(
        feature, index, kind, DriftTest.KOLMOGOROV_SMIRNOV, 0.5, 0.01, drifted, severity,
        p_value=1e-6, adjusted_p_value=2e-6,
    )  # fmt: skip


def test_a_window_alert_counts_tested_and_drifted_features_and_takes_the_worst_severity() -> None:
    monitor = Monitor(correction=Correction.BONFERRONI)
    a = finding("a", 0, Kind.DATA, Severity.MEDIUM)
    b = finding("b", 1, Kind.DATA, Severity.NONE, drifted=False)
    nans = finding("a", 0, Kind.QUALITY, Severity.HIGH)
    output = finding("prediction", -1, Kind.PREDICTION, Severity.MEDIUM)
    alert = window_alert(REF, "iris", 1, [a, b, nans, output], [a, nans, output], monitor, 30.0)
    assert alert.alert_id == "iris:1:0:drift"
    assert alert.severity is Severity.HIGH
    assert alert.kinds == {Kind.DATA, Kind.QUALITY, Kind.PREDICTION}
    assert (alert.features_tested, alert.features_drifted) == (2, 1)
    assert alert.findings == (a, nans, output)
    assert (alert.correction, alert.alpha, alert.window) == (Correction.BONFERRONI, 0.01, REF)
    assert alert.summary.startswith("a kolmogorov_smirnov 0.5 (p=2e-06); ")


def test_a_window_alert_is_at_least_low() -> None:
    quiet = finding("a", 0, Kind.DATA, Severity.NONE)
    alert = window_alert(REF, "iris", 1, [quiet], [quiet], Monitor(), 30.0)
    assert alert.severity is Severity.LOW


def test_labels_update_the_concept_status_and_a_change_raises_a_concept_alert() -> None:
    status = DriftStatus("iris", 2)
    assert status.labeled(0.1, changed=False, at=5.0) is None
    alert = status.labeled(0.6, changed=True, at=6.0, began_at=5.5)
    assert alert == Alert(
        alert_id="iris:2:concept:2",
        model="iris",
        version=2,
        kinds=frozenset({Kind.CONCEPT}),
        severity=Severity.HIGH,
        summary="error rate changed: now about 0.600 after 2 labels",
        occurred_at=6.0,
        change_began_at=5.5,
    )
    assert (status.concept.labeled_count, status.concept.error_estimate) == (2, 0.6)
    assert (status.concept.change_detected, status.concept.last_change_at) == (True, 6.0)
    assert status.last_alert_id == alert.alert_id


def closed(index: int, predictions: dict[str, int]) -> ClosedWindow:
    return ClosedWindow(
        model="iris",
        version=1,
        index=index,
        start=10.0 * index,
        end=10.0 * index + 9,
        requests=sum(predictions.values()),
        errors=0,
        nan_flagged=0,
        features=np.empty((0, 2)),
        predictions=predictions,
        latencies_ms=np.array([1.0, 2.0, 3.0]),
        labels=LabelTally(labeled=4, correct=3),
    )


def test_the_first_window_is_the_prediction_baseline_and_a_moved_one_alerts() -> None:
    state = VersionState.new("iris", 1, ModelMonitor())
    [metrics] = state.close(
        closed(0, {"0": 500, "1": 500}), Monitor(), Task.CLASSIFICATION, at=100.0
    )
    assert isinstance(metrics, MetricsWindow)
    assert (metrics.window.window_id, metrics.accuracy, metrics.emitted_at) == (
        "iris:1:0",
        0.75,
        100.0,
    )
    assert state.baseline_predictions == {"0": 500, "1": 500}
    assert (
        state.close(closed(1, {"0": 490, "1": 510}), Monitor(), Task.CLASSIFICATION, at=101.0)[1:]
        == []
    )
    metrics, alert = state.close(
        closed(2, {"0": 100, "1": 900}), Monitor(), Task.CLASSIFICATION, at=102.0
    )
    assert isinstance(alert, Alert)
    assert alert.kinds == {Kind.PREDICTION}
    status = state.status
    assert (status.windows_closed, status.latest_metrics, status.last_alert_id) == (
        3,
        metrics,
        "iris:1:2:drift",
    )
    assert [f.test for f in status.findings] == [DriftTest.CHI_SQUARE]


def test_a_version_resumes_from_its_snapshot() -> None:
    state = VersionState.new("iris", 1, ModelMonitor())
    state.close(closed(0, {"0": 5, "1": 5}), Monitor(), Task.CLASSIFICATION, at=100.0)
    for predicted in ("1", "0", "1"):
        state.score(predicted, "1", 0.9, Task.CLASSIFICATION, at=101.0)
    resumed = VersionState.new("iris", 1, ModelMonitor())
    resumed.resume(snapshots.decode("iris", 1, snapshots.encode(state.snapshot())))
    assert resumed.status == state.status
    assert resumed.baseline_predictions == state.baseline_predictions
    assert resumed.concept.estimate == state.concept.estimate
