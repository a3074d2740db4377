"""Drift statistics against scipy, false alarms under control, and shifts caught in one window."""

import itertools

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from flywheel_drift.concept import Adwin, PageHinkley
from flywheel_drift.detection import (
    MULTIVARIATE,
    DriftTest,
    Kind,
    Monitor,
    Severity,
    Thresholds,
    alerting,
    data_drift,
    prediction_drift,
    quality,
)
from flywheel_drift.profiles import bin_counts, build_profile
from flywheel_drift.statistics import (
    Correction,
    chi_square,
    continuous,
    correct,
    jensen_shannon,
    outside_range_p_values,
    population_stability_index,
)

RNG_SEED = 20261123


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(RNG_SEED)


@pytest.mark.parametrize("shift", [0.0, 0.2, 1.0])
def test_ks_and_wasserstein_equal_scipy(rng: np.random.Generator, shift: float) -> None:
    reference = np.sort(rng.normal(size=1500))
    window = rng.normal(shift, 1.3, size=1000)
    measured = continuous(reference, window)
    expected = stats.ks_2samp(reference, window, method="asymp")
    assert measured.ks.statistic == pytest.approx(expected.statistic, abs=1e-12)
    assert measured.ks.p_value == pytest.approx(expected.pvalue, rel=1e-9, abs=1e-300)
    assert measured.wasserstein == pytest.approx(
        stats.wasserstein_distance(reference, window), rel=1e-9
    )


def test_ties_and_discrete_values_still_equal_scipy(rng: np.random.Generator) -> None:
    reference = np.sort(rng.integers(0, 5, size=800).astype(float))
    window = rng.integers(0, 6, size=600).astype(float)
    measured = continuous(reference, window)
    expected = stats.ks_2samp(reference, window, method="asymp")
    assert measured.ks.statistic == pytest.approx(expected.statistic)
    assert measured.ks.p_value == pytest.approx(expected.pvalue)
    assert measured.wasserstein == pytest.approx(stats.wasserstein_distance(reference, window))


@pytest.mark.parametrize("scale", [1.0, 1.08, 1.15])
def test_ks_p_values_from_the_sketch_equal_scipys_on_the_whole_reference(
    rng: np.random.Generator, scale: float
) -> None:
    """The profile keeps 2,000 quantiles of 5,000 rows; the p-value is the 5,000 rows' (as
    if the sketch were the reference, it came out 3-10x too large on a variance change)."""
    reference = rng.normal(size=(5000, 2))
    profile = build_profile("m", 1, reference)
    window = rng.normal(0.0, scale, size=(1000, 2))
    window[:7, 1] = np.nan  # the second feature is tested apart, on its finite values
    findings = data_drift(profile, window, Monitor(correction=Correction.NONE))
    for index in (0, 1):
        [ks] = [
            f
            for f in findings
            if f.feature_index == index and f.test is DriftTest.KOLMOGOROV_SMIRNOV
        ]
        values = window[:, index][np.isfinite(window[:, index])]
        expected = stats.ks_2samp(reference[:, index], values, method="asymp")
        assert ks.statistic == pytest.approx(expected.statistic, abs=1 / 2000)
        assert ks.p_value is not None
        assert abs(np.log10(ks.p_value) - np.log10(expected.pvalue)) < 0.1, (
            ks.p_value,
            expected.pvalue,
        )


def test_chi_square_psi_and_jensen_shannon_equal_their_definitions() -> None:
    reference, window = np.array([50, 30, 20]), np.array([30, 30, 40])
    result = chi_square(reference, window)
    statistic, p_value, _, _ = stats.chi2_contingency(np.vstack([reference, window]), False)
    assert (result.statistic, result.p_value) == pytest.approx((statistic, p_value))
    p, q = reference / 100, window / 100
    assert population_stability_index(reference, window) == pytest.approx(
        np.sum((q - p) * np.log(q / p))
    )
    assert jensen_shannon(reference, window) == pytest.approx(distance.jensenshannon(p, q, base=2))
    assert chi_square(np.array([10, 0]), np.array([5, 0])).p_value == 1.0


def test_corrections_match_bonferroni_and_scipys_benjamini_hochberg() -> None:
    p_values = np.array([0.001, 0.008, 0.039, 0.041, 0.042, 0.06, 0.074, 0.205, 0.212, 0.216])
    np.testing.assert_allclose(
        correct(p_values, Correction.BONFERRONI), np.minimum(p_values * 10, 1)
    )
    np.testing.assert_allclose(
        correct(p_values, Correction.BENJAMINI_HOCHBERG),
        stats.false_discovery_control(p_values, method="bh"),
    )
    np.testing.assert_array_equal(correct(p_values, Correction.NONE), p_values)


def test_no_drift_raises_at_most_alpha_false_alarms_over_200_windows(
    rng: np.random.Generator,
) -> None:
    reference = rng.normal(size=(5000, 30))
    profile = build_profile("m", 1, reference)
    monitor = Monitor(thresholds=Thresholds(alpha=0.01))
    alarms = 0
    for _ in range(200):
        window = rng.normal(size=(1000, 30))
        findings = data_drift(profile, window, monitor) + quality(profile, window, "FP32", monitor)
        drifted = [f for f in alerting(findings, monitor) if f.kind is Kind.DATA]
        alarms += bool(drifted)
    assert alarms / 200 <= 0.01


def test_half_a_sigma_shift_in_one_of_30_features_is_caught_in_one_window(
    rng: np.random.Generator,
) -> None:
    profile = build_profile("m", 1, rng.normal(size=(5000, 30)))
    window = rng.normal(size=(1000, 30))
    window[:, 17] += 0.5
    monitor = Monitor(thresholds=Thresholds(alpha=0.01), correction=Correction.BONFERRONI)
    drifted = alerting(data_drift(profile, window, monitor), monitor)
    assert {(f.feature, f.test) for f in drifted} == {("f17", DriftTest.KOLMOGOROV_SMIRNOV)}
    [finding] = drifted
    assert finding.adjusted_p_value is not None
    assert finding.adjusted_p_value < 0.01
    assert finding.severity >= Severity.MEDIUM


def test_distances_alert_only_with_a_threshold(rng: np.random.Generator) -> None:
    profile = build_profile("m", 1, rng.normal(size=(3000, 2)))
    window = rng.normal(size=(1000, 2))
    window[:, 0] += 1.0
    silent = data_drift(profile, window, Monitor(tests=frozenset({DriftTest.WASSERSTEIN})))
    assert not any(f.drifted for f in silent)
    assert silent[0].statistic == pytest.approx(1.0, abs=0.15)
    loud = data_drift(
        profile,
        window,
        Monitor(
            tests=frozenset({DriftTest.WASSERSTEIN, DriftTest.POPULATION_STABILITY_INDEX}),
            thresholds=Thresholds(wasserstein=0.3, psi=0.25),
        ),
    )
    assert {f.test for f in loud if f.drifted} == {
        DriftTest.WASSERSTEIN,
        DriftTest.POPULATION_STABILITY_INDEX,
    }
    assert all(f.feature == "f0" for f in loud if f.drifted)


def test_categorical_features_use_chi_square(rng: np.random.Generator) -> None:
    reference = np.column_stack([rng.integers(0, 3, 3000), rng.normal(size=3000)])
    profile = build_profile("m", 1, reference, ["colour", "size"], categorical={"colour"})
    same = reference[rng.permutation(3000)[:1000]]  # a draw from the reference itself
    shifted = np.column_stack([rng.choice(3, 1000, p=[0.6, 0.2, 0.2]), rng.normal(size=1000)])
    monitor = Monitor()
    assert not alerting(data_drift(profile, same, monitor), monitor)
    [finding] = alerting(data_drift(profile, shifted, monitor), monitor)
    assert (finding.feature, finding.test) == ("colour", DriftTest.CHI_SQUARE)


def test_quality_flags_nans_out_of_range_values_and_schema_changes(
    rng: np.random.Generator,
) -> None:
    profile = build_profile("m", 1, rng.uniform(0, 1, size=(2000, 3)))
    window = rng.uniform(0, 1, size=(1000, 3))
    window[:100, 0] = np.nan
    window[:200, 2] = 5.0
    monitor = Monitor()
    flagged = {(f.feature, f.test) for f in quality(profile, window, "FP32", monitor) if f.drifted}
    assert flagged == {("f0", DriftTest.NAN_RATE), ("f2", DriftTest.OUT_OF_RANGE_RATE)}
    [schema] = quality(profile, window[:, :2], "FP32", monitor)
    assert (schema.test, schema.severity) == (DriftTest.SCHEMA_CHANGE, Severity.CRITICAL)
    [retyped] = quality(profile, window, "FP64", monitor)
    assert retyped.test is DriftTest.SCHEMA_CHANGE


@pytest.mark.parametrize(("reference_size", "window_size"), [(2, 4), (4, 3), (5, 5)])
def test_outside_range_p_values_are_exact_when_window_and_reference_are_exchangeable(
    reference_size: int, window_size: int
) -> None:
    """Every order of the pooled values is as likely without drift: count, over all of
    them, how often the window has at least s values outside the reference's range."""
    pooled = reference_size + window_size
    outside_counts = []
    for positions in itertools.combinations(range(pooled), reference_size):
        lowest, highest = positions[0], positions[-1]
        outside_counts.append(lowest + (pooled - 1 - highest))
    counts = np.array(outside_counts)
    for s in range(window_size + 1):
        [p_value] = outside_range_p_values(np.array([s]), [window_size], [reference_size])
        assert p_value == pytest.approx((counts >= s).mean(), rel=1e-9)


def test_an_undrifted_window_past_a_small_references_extremes_is_not_flagged(
    rng: np.random.Generator,
) -> None:
    """A reference of n values spans its own range, so undrifted values still fall outside
    it 2 / (n + 1) of the time: out-of-range p-values hold their level. Comparing with the
    reference's own rate, none, flagged 4.6% of such features at 0.01 and 13.7% at 0.05."""
    p_values = []
    for _ in range(200):
        profile = build_profile("m", 1, rng.uniform(0, 1, size=(500, 3)))
        findings = quality(profile, rng.uniform(0, 1, size=(1000, 3)), "FP32", Monitor())
        p_values += [f.p_value for f in findings if f.test is DriftTest.OUT_OF_RANGE_RATE]
    assert len(p_values) == 600
    assert np.mean(np.array(p_values) < 0.01) <= 0.02
    assert np.mean(np.array(p_values) < 0.05) <= 0.07


def test_quality_compares_nan_rates_with_the_references_own(rng: np.random.Generator) -> None:
    """Under the 5% absolute limit: from 0% in training to 4.5% is flagged; from 4% to 4.5%
    (data that was always that sparse) is not; the reference's rates are in its profile."""
    reference = rng.normal(size=(5000, 2))
    reference[:200, 1] = np.nan  # the second feature was 4% missing in training already
    profile = build_profile("m", 1, reference)
    assert [f.nan_count for f in profile.features] == [0, 200]
    window = rng.normal(size=(1000, 2))
    window[:45, :] = np.nan  # 4.5% in both
    findings = {
        f.feature: f
        for f in quality(profile, window, "FP32", Monitor())
        if f.test is DriftTest.NAN_RATE
    }
    assert findings["f0"].drifted
    assert findings["f0"].severity is Severity.MEDIUM
    assert findings["f0"].p_value is not None
    assert findings["f0"].p_value == pytest.approx(
        stats.fisher_exact([[45, 955], [0, 5000]], alternative="greater").pvalue
    )
    assert not findings["f1"].drifted
    assert findings["f1"].statistic == pytest.approx(0.045)


def test_quality_raises_no_more_false_alarms_than_alpha_on_clean_windows(
    rng: np.random.Generator,
) -> None:
    """Values past the reference's extremes happen in clean data too (a window of 1,000
    beside 5,000 reference rows holds a few): 200 clean windows of 30 features, no alarm
    beyond alpha."""
    reference = rng.normal(size=(5000, 30))
    reference[rng.random(reference.shape) < 0.01] = np.nan  # 1% missing, in training too
    profile = build_profile("m", 1, reference)
    monitor = Monitor(thresholds=Thresholds(alpha=0.01))
    alarms = 0
    for _ in range(200):
        window = rng.normal(size=(1000, 30))
        window[rng.random(window.shape) < 0.01] = np.nan
        alarms += any(f.drifted for f in quality(profile, window, "FP32", monitor))
    assert alarms <= 4  # alpha 0.01 per window: 2 expected at most


def test_a_window_of_one_row_is_not_tested_for_drift(rng: np.random.Generator) -> None:
    # One request in a quiet time window says nothing about a distribution: with a PSI or
    # Jensen-Shannon threshold it would otherwise alert on every such window.
    profile = build_profile("m", 1, rng.normal(size=(2000, 3)))
    monitor = Monitor(thresholds=Thresholds(psi=0.2, jensen_shannon=0.1))
    assert data_drift(profile, rng.normal(size=(1, 3)), monitor) == []
    assert {f.feature for f in data_drift(profile, rng.normal(size=(2, 3)), monitor)} == {
        "f0",
        "f1",
        "f2",
        MULTIVARIATE,
    }


def test_prediction_drift_compares_classes_with_the_first_window() -> None:
    monitor = Monitor()
    steady = prediction_drift({"0": 500, "1": 500}, {"0": 490, "1": 510}, monitor)
    assert steady is not None
    assert not steady.drifted
    moved = prediction_drift({"0": 500, "1": 500}, {"0": 300, "1": 700}, monitor)
    assert moved is not None
    assert moved.drifted


def test_profiles_are_compact_and_keep_the_reference_shape(rng: np.random.Generator) -> None:
    reference = rng.normal(size=(50_000, 4))
    profile = build_profile("m", 1, reference, sketch_size=1000)
    feature = profile.features[0]
    assert len(feature.sketch) == 1000
    midpoints = (np.arange(1000) + 0.5) / 1000
    expected = np.quantile(reference[:, 0], midpoints, method="inverted_cdf")
    np.testing.assert_array_equal(feature.sketch, expected)
    assert feature.counts.sum() == 50_000
    np.testing.assert_array_equal(feature.counts, bin_counts(reference[:, 0], feature.edges))
    assert stats.ks_2samp(feature.sketch, reference[:, 0]).statistic < 0.01


@pytest.mark.parametrize("make", [PageHinkley, Adwin], ids=["page-hinkley", "adwin"])
def test_change_detectors_catch_a_rise_in_errors_and_stay_quiet_before(
    rng: np.random.Generator, make: type
) -> None:
    detector = make()
    before = rng.random(3000) < 0.05
    after = rng.random(3000) < 0.30
    early = [i for i, e in enumerate(before) if detector.update(float(e))]
    assert early == []
    late = [i for i, e in enumerate(after) if detector.update(float(e))]
    assert late
    assert late[0] < 500  # caught within a few hundred labels of the change


@pytest.mark.parametrize("make", [PageHinkley, Adwin], ids=["page-hinkley", "adwin"])
def test_change_detectors_say_when_the_change_began(rng: np.random.Generator, make: type) -> None:
    """Observation i is made at time 1000 + i; the error rate rises at observation 3000.
    Training on data since the estimate must mostly see the new regime: the estimate falls
    within 150 observations before the change, and before the alarm."""
    detector = make()
    errors = np.concatenate([rng.random(3000) < 0.05, rng.random(3000) < 0.30])
    alarms = [i for i, e in enumerate(errors) if detector.update(float(e), at=1000.0 + i)]
    assert alarms
    began = detector.change_began_at - 1000.0
    assert 3000 - 150 <= began < alarms[0]


def test_adwin_sees_an_error_rate_move_from_9_to_14_percent(rng: np.random.Generator) -> None:
    """A retrained version meeting the next change of concept: accuracy 0.91 falls to 0.86.
    The Hoeffding bound over 5,000 labels never saw it (SEA's third change went unnoticed
    for 25,000 requests); the variance-aware bound does within a few thousand labels, and
    stays quiet over 40,000 labels of each rate without a change."""
    for _ in range(3):
        detector = Adwin()
        before = [detector.update(float(e)) for e in rng.random(20_000) < 0.09]
        after = [detector.update(float(e)) for e in rng.random(8_000) < 0.14]
        assert not any(before)
        assert any(after)
    for rate in (0.09, 0.14):
        quiet = Adwin()
        assert not any(quiet.update(float(e)) for e in rng.random(40_000) < rate)


@pytest.mark.parametrize("max_window", [5000, 400], ids=["after-a-change", "window-full"])
def test_adwin_estimates_the_error_rate_of_the_labels_it_kept(
    rng: np.random.Generator, max_window: int
) -> None:
    detector = Adwin(max_window=max_window)
    values = (rng.random(3000) < 0.05).tolist() + (rng.random(1000) < 0.4).tolist()
    for value in values:
        detector.update(float(value))
    assert detector.width < len(values)
    assert detector.estimate == pytest.approx(np.mean(values[-detector.width :]), abs=1e-12)


def test_features_tested_together_measure_what_each_feature_tested_alone_does(
    rng: np.random.Generator,
) -> None:
    reference = rng.normal(size=(3000, 5))
    reference[:, 3] = rng.integers(0, 4, size=3000)  # few distinct values: fewer bin edges
    profile = build_profile("m", 1, reference)
    window = rng.normal(0.2, 1.1, size=(800, 5))
    window[:5, 1] = np.nan  # a column with gaps is tested on its finite values
    window[:, 3] = rng.integers(0, 5, size=800)
    assert profile.stacked.indices.tolist() == [0, 1, 2, 4]  # 3 has its own bin count
    findings = data_drift(profile, window, Monitor(correction=Correction.NONE))
    for index, feature in enumerate(profile.features):
        values = window[:, index][np.isfinite(window[:, index])]
        alone = continuous(feature.sketch, values, feature.size)
        counts = bin_counts(values, feature.edges)
        expected = {
            DriftTest.KOLMOGOROV_SMIRNOV: (alone.ks.statistic, alone.ks.p_value),
            DriftTest.WASSERSTEIN: (alone.wasserstein, None),
            DriftTest.POPULATION_STABILITY_INDEX: (
                population_stability_index(feature.counts, counts),
                None,
            ),
            DriftTest.JENSEN_SHANNON: (jensen_shannon(feature.counts, counts), None),
        }
        measured = {f.test: (f.statistic, f.p_value) for f in findings if f.feature_index == index}
        assert measured.keys() == expected.keys()
        for test, (statistic, p_value) in expected.items():
            assert measured[test][0] == pytest.approx(statistic, rel=1e-12, abs=1e-15), test
            if p_value is None:
                assert measured[test][1] is None, test
            else:
                assert measured[test][1] == pytest.approx(p_value, rel=1e-12), test
