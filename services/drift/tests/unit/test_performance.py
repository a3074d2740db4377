"""Performance before labels (CBPE) and regression errors, as pure logic."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel_drift import snapshots
from flywheel_drift.detection import Monitor
from flywheel_drift.domain import Alert, MetricsWindow, ModelMonitor
from flywheel_drift.performance import (
    REFERENCE_LABELS,
    Calibration,
    ConfidenceHistogram,
    ErrorScale,
    LabelTally,
    Task,
)
from flywheel_drift.versions import VersionState
from flywheel_drift.windows import ClosedWindow

RNG_SEED = 11


def labelled(
    rng: np.random.Generator, n: int, low: float, high: float, overconfidence: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Predictions with confidence drawn in [low, high], right with probability
    confidence - overconfidence: a calibrated model when that is 0."""
    confidence = rng.uniform(low, high, n)
    correct = rng.random(n) < confidence - overconfidence
    return confidence, correct


def estimate_of(calibration: Calibration, confidence: np.ndarray) -> float:
    window = ConfidenceHistogram()
    window.add(confidence)
    estimate = calibration.estimate(window)
    assert estimate is not None
    assert estimate.predictions == len(confidence)
    return estimate.accuracy


def test_a_calibrated_models_estimate_follows_its_accuracy_down_before_any_label() -> None:
    rng = np.random.default_rng(RNG_SEED)
    calibration = Calibration()
    sure, sure_correct = labelled(rng, 5000, 0.8, 1.0)
    unsure, unsure_correct = labelled(rng, 5000, 0.4, 0.7)
    # No label learnt yet: the probabilities as they are.
    assert estimate_of(calibration, sure) == pytest.approx(sure_correct.mean(), abs=0.02)
    assert estimate_of(calibration, unsure) == pytest.approx(unsure_correct.mean(), abs=0.02)
    assert unsure_correct.mean() < sure_correct.mean() - 0.2


def test_an_overconfident_model_is_calibrated_on_its_reference_period() -> None:
    rng = np.random.default_rng(RNG_SEED)
    calibration = Calibration()
    reference, reference_correct = labelled(rng, 3000, 0.5, 1.0, overconfidence=0.2)
    for confidence, correct in zip(reference.tolist(), reference_correct.tolist(), strict=True):
        calibration.learn(confidence, correct)
    assert calibration.learnt == REFERENCE_LABELS  # then frozen
    later, later_correct = labelled(rng, 5000, 0.5, 1.0, overconfidence=0.2)
    raw = later.mean()
    assert raw - later_correct.mean() > 0.15  # the raw probabilities promise too much
    assert estimate_of(calibration, later) == pytest.approx(later_correct.mean(), abs=0.03)


def test_a_window_without_probabilities_has_no_estimate() -> None:
    window = ConfidenceHistogram()
    window.add(np.array([np.nan, np.nan]))
    assert Calibration().estimate(window) is None


def test_a_regression_window_reports_its_errors_and_no_accuracy() -> None:
    labels = LabelTally()
    for error in (1.0, -3.0, 0.0, 2.0):
        labels.add(error == 0.0, error)
    window = ClosedWindow(
        model="house", version=1, index=0, start=0.0, end=1.0, requests=4, errors=0,
        nan_flagged=0, features=np.empty((0, 2)), predictions={}, latencies_ms=np.ones(4),
        labels=labels,
    )  # fmt: skip
    metrics = MetricsWindow.of(window, 2.0, Task.REGRESSION, None)
    assert metrics.accuracy is None
    assert metrics.mean_absolute_error == pytest.approx(1.5)
    assert metrics.root_mean_squared_error == pytest.approx(np.sqrt(14 / 4))


def test_a_large_error_is_one_above_most_of_the_reference_periods() -> None:
    scale = ErrorScale(size=100)
    assert [scale.signal(float(e)) for e in range(1, 100)] == [None] * 99
    assert scale.signal(100.0) is None  # the last of the reference period
    assert scale.large == pytest.approx(np.quantile(np.arange(1, 101), 0.9))
    assert (scale.signal(50.0), scale.signal(95.0)) == (0.0, 1.0)


def test_a_regression_versions_errors_growing_raise_concept_drift_and_survive_a_restart() -> None:
    rng = np.random.default_rng(RNG_SEED)
    state = VersionState.new("house", 1, ModelMonitor(task=Task.REGRESSION))
    alerts: list[Alert] = []

    def score(errors: np.ndarray) -> None:
        for error in errors.tolist():
            alert = state.score(repr(10.0 + error), "10.0", None, Task.REGRESSION, at=1.0)
            alerts.extend([alert] if alert is not None else [])

    score(rng.normal(0.0, 1.0, REFERENCE_LABELS + 2000))
    assert alerts == []
    resumed = VersionState.new("house", 1, ModelMonitor(task=Task.REGRESSION))
    resumed.resume(snapshots.decode("house", 1, snapshots.encode(state.snapshot())))
    assert resumed.error_scale.large == state.error_scale.large
    state = resumed
    score(rng.normal(0.0, 3.0, 1000))  # the model now misses three times as far
    assert alerts
    assert alerts[0].summary.startswith("error rate changed")


def test_unparseable_regression_labels_are_left_out() -> None:
    state = VersionState.new("house", 1, ModelMonitor(task=Task.REGRESSION))
    assert state.score("12.5", "n/a", None, Task.REGRESSION, at=1.0) is None
    assert state.windows.checkpoint()["labels_between"] == [0, 0, 0.0, 0.0]
    assert state.error_scale.errors == []
    assert state.status.concept.labeled_count == 0


def test_a_classifiers_labels_calibrate_it_and_its_windows_carry_the_estimate() -> None:
    state = VersionState.new("iris", 1, ModelMonitor())
    for _ in range(100):  # confident, and right only half the time
        state.score("1", "1", 0.95, Task.CLASSIFICATION, at=1.0)
        state.score("1", "0", 0.95, Task.CLASSIFICATION, at=1.0)
    assert state.calibration.learnt == 200
    confidence = ConfidenceHistogram()
    confidence.add(np.full(50, 0.95))
    window = ClosedWindow(
        model="iris", version=1, index=0, start=0.0, end=1.0, requests=50, errors=0,
        nan_flagged=0, features=np.empty((0, 2)), predictions={"1": 50},
        latencies_ms=np.ones(50), confidence=confidence,
    )  # fmt: skip
    [metrics] = state.close(window, Monitor(), Task.CLASSIFICATION, at=2.0)
    assert isinstance(metrics, MetricsWindow)
    assert metrics.estimate is not None
    assert metrics.estimate.calibration_labels == 200
    assert metrics.estimate.accuracy == pytest.approx(0.5)
    resumed = VersionState.new("iris", 1, ModelMonitor())
    resumed.resume(snapshots.decode("iris", 1, snapshots.encode(state.snapshot())))
    assert resumed.calibration.learnt == 200


def test_confidence_beyond_the_reference_periods_moves_the_estimate_one_for_one() -> None:
    calibration = Calibration()
    for bin_ in range(12, 20):  # labels only above 0.6 confidence, right 0.2 less often
        confidence = (bin_ + 0.5) / 20
        for i in range(50):
            calibration.learn(confidence, i < round(50 * (confidence - 0.2)))
    low = np.full(10, 0.325)  # six bins below the lowest labelled one
    assert estimate_of(calibration, low) == pytest.approx(0.325 - 0.2, abs=0.01)


def test_the_calibration_never_expects_less_of_a_surer_prediction() -> None:
    calibration = Calibration()
    for i in range(100):
        calibration.learn(0.85, i < 90)  # 0.9 right
        calibration.learn(0.95, i < 70)  # 0.7 right: by chance, or a few bad labels
    sure, surer = np.full(10, 0.85), np.full(10, 0.95)
    assert estimate_of(calibration, sure) == estimate_of(calibration, surer) == pytest.approx(0.8)
