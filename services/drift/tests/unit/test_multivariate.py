"""The multivariate test: it sees a joint change that every per-feature test misses, stays at
alpha on clean windows, and is chosen per monitor like any other test."""

import numpy as np
import pytest
from scipy import stats

from flywheel.drift.v1 import types_pb2 as types
from flywheel_drift import converters
from flywheel_drift.detection import (
    ALL_TESTS,
    MULTIVARIATE,
    DriftTest,
    Finding,
    Kind,
    Monitor,
    Severity,
    alerting,
    data_drift,
)
from flywheel_drift.domain import WindowRef, window_alert
from flywheel_drift.monitors import monitor_of
from flywheel_drift.multivariate import MIN_ROWS, reconstruction_test
from flywheel_drift.profiles import build_profile

RNG_SEED = 20261206
FEATURES = 8


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


def correlated(rng: np.random.Generator, rows: int, correlation: float) -> np.ndarray:
    """Standard normal features; features 2 and 5 with the given correlation."""
    values = rng.normal(size=(rows, FEATURES))
    values[:, 5] = correlation * values[:, 2] + np.sqrt(1 - correlation**2) * values[:, 5]
    return values


def test_a_correlation_that_flips_sign_is_caught_where_per_feature_tests_see_nothing(
    rng: np.random.Generator,
) -> None:
    profile = build_profile("m", 1, correlated(rng, 5000, 0.9))
    flipped = correlated(rng, 1000, -0.9)  # every marginal still standard normal
    findings = data_drift(profile, flipped, Monitor())
    per_feature = [f for f in findings if f.test is DriftTest.KOLMOGOROV_SMIRNOV]
    assert len(per_feature) == FEATURES
    assert not any(f.drifted for f in per_feature)
    [joint] = alerting(findings, Monitor())
    assert (joint.feature, joint.feature_index, joint.kind, joint.test) == (
        MULTIVARIATE, -1, Kind.DATA, DriftTest.PCA_RECONSTRUCTION,
    )  # fmt: skip
    assert joint.adjusted_p_value is not None
    assert joint.adjusted_p_value < 1e-10
    assert joint.severity is Severity.HIGH
    per_feature_only = Monitor(tests=ALL_TESTS - {DriftTest.PCA_RECONSTRUCTION})
    assert alerting(data_drift(profile, flipped, per_feature_only), per_feature_only) == []


def test_clean_windows_alarm_about_alpha_of_the_time(rng: np.random.Generator) -> None:
    mixing = np.eye(FEATURES) + 0.4 * rng.normal(size=(FEATURES, FEATURES))
    profile = build_profile("m", 1, rng.normal(size=(5000, FEATURES)) @ mixing)
    assert profile.reconstruction is not None
    p_values = np.array([
        reconstruction_test(profile.reconstruction, rng.normal(size=(1000, FEATURES)) @ mixing)
        .p_value for _ in range(200)
    ])  # fmt: skip
    assert (p_values < 0.01).sum() <= 6  # 2 expected of 200 at alpha 0.01
    assert 0.3 < np.median(p_values) < 0.7  # spread evenly, not only rarely small


def test_its_p_value_is_scipys_ks_of_the_window_errors_against_the_held_out_reference(
    rng: np.random.Generator,
) -> None:
    # 600 held-out reference rows fit in the sketch, so it holds every one of their errors.
    profile = build_profile("m", 1, correlated(rng, 1200, 0.5), sketch_size=1000)
    model = profile.reconstruction
    assert model is not None
    assert (model.size, len(model.errors)) == (600, 600)
    assert 1 <= len(model.dropped) < FEATURES
    window = correlated(rng, 300, 0.2)
    result = reconstruction_test(model, window)
    assert result is not None
    expected = stats.ks_2samp(model.errors, model.row_errors(window), method="asymp")
    assert result.statistic == pytest.approx(expected.statistic)
    assert result.p_value == pytest.approx(expected.pvalue, rel=1e-6)


def test_rows_with_nan_or_inf_are_left_out(rng: np.random.Generator) -> None:
    profile = build_profile("m", 1, correlated(rng, 2000, 0.9))
    assert profile.reconstruction is not None
    window = correlated(rng, 500, 0.9)
    broken = window.copy()
    broken[:50, 3] = np.nan
    broken[50:60, 0] = np.inf
    assert reconstruction_test(profile.reconstruction, broken) == reconstruction_test(
        profile.reconstruction, window[60:]
    )
    assert reconstruction_test(profile.reconstruction, broken[:59]) is None  # one row left


def test_categorical_features_stay_out_and_too_little_reference_fits_nothing(
    rng: np.random.Generator,
) -> None:
    reference = np.column_stack([rng.integers(0, 3, 2000), correlated(rng, 2000, 0.9)])
    names = ["colour", *(f"x{i}" for i in range(FEATURES))]
    profile = build_profile("m", 1, reference, names, categorical={"colour"})
    assert profile.reconstruction is not None
    assert profile.reconstruction.features.tolist() == list(range(1, FEATURES + 1))
    one_numeric = build_profile("m", 1, reference[:, :2], ["colour", "x"], categorical={"colour"})
    assert one_numeric.reconstruction is None
    assert build_profile("m", 1, correlated(rng, MIN_ROWS - 1, 0.9)).reconstruction is None
    assert build_profile("m", 1, np.ones((100, 3))).reconstruction is None  # no variance
    constant = data_drift(build_profile("m", 1, np.ones((100, 3))), np.ones((10, 3)), Monitor())
    assert all(f.test is not DriftTest.PCA_RECONSTRUCTION for f in constant)


def test_a_monitor_config_chooses_it_like_any_test() -> None:
    default = monitor_of(types.MonitorConfig(model="m"), 100).detection
    assert DriftTest.PCA_RECONSTRUCTION in default.tests
    chosen = types.MonitorConfig(
        model="m", tests=[types.DRIFT_TEST_KOLMOGOROV_SMIRNOV, types.DRIFT_TEST_PCA_RECONSTRUCTION]
    )
    assert monitor_of(chosen, 100).detection.tests == {
        DriftTest.KOLMOGOROV_SMIRNOV,
        DriftTest.PCA_RECONSTRUCTION,
    }
    left_out = types.MonitorConfig(model="m", tests=[types.DRIFT_TEST_KOLMOGOROV_SMIRNOV])
    assert DriftTest.PCA_RECONSTRUCTION not in monitor_of(left_out, 100).detection.tests


def test_its_finding_round_trips_and_counts_as_one_drifted_feature() -> None:
    joint = Finding(
        MULTIVARIATE, -1, Kind.DATA, DriftTest.PCA_RECONSTRUCTION, 0.3, 0.01, True,
        Severity.HIGH, p_value=1e-40, adjusted_p_value=1e-38,
    )  # fmt: skip
    message = converters.finding_message(joint)
    assert message.test == types.DRIFT_TEST_PCA_RECONSTRUCTION
    assert converters.finding_of(message) == joint
    steady = Finding("x0", 0, Kind.DATA, DriftTest.KOLMOGOROV_SMIRNOV, 0.01, 0.01, False,
                     Severity.NONE, p_value=0.9, adjusted_p_value=0.9)  # fmt: skip
    ref = WindowRef("m:1:0", timed=False, index=0, start=0.0, end=1.0)
    alert = window_alert(ref, "m", 1, [steady, joint], [joint], Monitor(), 2.0)
    assert (alert.features_tested, alert.features_drifted) == (2, 1)
