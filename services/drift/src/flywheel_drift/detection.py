"""One window against its reference: data drift, prediction drift and data quality findings.

Only tests with a p-value decide drift statistically, after the multiple-testing correction
over every feature of the window, so the false-alarm rate of a window stays at alpha. The
multivariate test (the window's rows against the reference's principal components) is one
more hypothesis of that family.
Distances (PSI, Wasserstein, Jensen-Shannon) are always reported and alert only when the
monitor sets a threshold for them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum
from typing import NamedTuple

import numpy as np

from flywheel_drift.multivariate import reconstruction_test
from flywheel_drift.profiles import (
    FeatureCounts,
    FeatureProfile,
    ReferenceProfile,
    bin_counts,
    bin_counts_sorted,
    categories_counts,
)
from flywheel_drift.statistics import (
    Correction,
    chi_square,
    continuous,
    continuous_columns,
    correct,
    higher_rate_p_values,
    jensen_shannon,
    jensen_shannon_distances,
    outside_range_p_values,
    population_stability_index,
    population_stability_indices,
)


class DriftTest(StrEnum):
    KOLMOGOROV_SMIRNOV = "kolmogorov_smirnov"
    CHI_SQUARE = "chi_square"
    POPULATION_STABILITY_INDEX = "population_stability_index"
    WASSERSTEIN = "wasserstein"
    JENSEN_SHANNON = "jensen_shannon"
    NAN_RATE = "nan_rate"
    INF_RATE = "inf_rate"
    OUT_OF_RANGE_RATE = "out_of_range_rate"
    SCHEMA_CHANGE = "schema_change"
    PCA_RECONSTRUCTION = "pca_reconstruction"


class Kind(StrEnum):
    DATA = "data"
    PREDICTION = "prediction"
    QUALITY = "quality"
    CONCEPT = "concept"


class Severity(IntEnum):
    NONE = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


ALL_TESTS = frozenset(DriftTest)

MULTIVARIATE = "*multivariate*"
"""The feature name of a multivariate finding (its feature_index is -1): it tests every
numeric feature at once."""


@dataclass(frozen=True)
class Thresholds:
    alpha: float = 0.01
    """Significance level for tests with p-values, after correction."""
    psi: float | None = None
    wasserstein: float | None = None
    jensen_shannon: float | None = None
    nan_rate: float = 0.05
    inf_rate: float = 0.0
    out_of_range_rate: float = 0.05


MAX_ALARM_WINDOWS = 100


@dataclass(frozen=True)
class AlarmPolicy:
    """An alert only when `drifted_windows` of the last `of_windows` windows drifted, the
    closing window among them: k of n over consecutive windows. At a per-window false-alarm
    rate p, 2 of 3 alarms falsely about 3p^2 of the time (3 in 10,000 windows at p = 0.01)
    and waits one window more for a lasting change."""

    drifted_windows: int = 1
    of_windows: int = 1

    def alarms(self, drifted: Sequence[bool]) -> bool:
        """`drifted`: whether each recent window drifted, oldest first, the closing last."""
        recent = drifted[-self.of_windows :]
        return bool(recent) and recent[-1] and sum(recent) >= self.drifted_windows


@dataclass(frozen=True)
class Monitor:
    """How one model is watched (the domain side of MonitorConfig)."""

    tests: frozenset[DriftTest] = ALL_TESTS
    thresholds: Thresholds = field(default_factory=Thresholds)
    correction: Correction = Correction.BENJAMINI_HOCHBERG
    min_alert_severity: Severity = Severity.MEDIUM
    alarm: AlarmPolicy = field(default_factory=AlarmPolicy)


@dataclass(frozen=True)
class Finding:
    feature: str
    feature_index: int
    kind: Kind
    test: DriftTest
    statistic: float
    threshold: float
    drifted: bool
    severity: Severity
    p_value: float | None = None
    adjusted_p_value: float | None = None


@dataclass(frozen=True)
class _Measured:
    """What the continuous tests measured of one numeric feature."""

    ks_statistic: float
    ks_p_value: float
    wasserstein: float
    psi: float
    jensen_shannon: float
    counts: np.ndarray
    """The window's values in the reference bins."""


def data_drift(profile: ReferenceProfile, window: np.ndarray, monitor: Monitor) -> list[Finding]:
    """Per-feature two-sample tests of a [rows, features] window against the profile."""
    return data_drift_and_counts(profile, window, monitor).findings


class WindowTests(NamedTuple):
    findings: list[Finding]
    counts: tuple[FeatureCounts, ...]
    """Each feature's finite window values in its reference bins (numeric) or categories
    and one more for unseen ones (categorical): what the tests compared, and what the
    window's report draws."""


def data_drift_and_counts(
    profile: ReferenceProfile, window: np.ndarray, monitor: Monitor
) -> WindowTests:
    """`data_drift`, and the window's counts its tests made on the way."""
    columns = np.ascontiguousarray(window.T, dtype=np.float64)
    measured = _measure_numeric(profile, columns)
    findings: list[Finding] = []
    counts: list[FeatureCounts] = []
    tested: list[int] = []  # indices into findings of tests with p-values
    for index, feature in enumerate(profile.features):
        if feature.categorical:
            values = columns[index][np.isfinite(columns[index])]
            observed = categories_counts(values, list(feature.categories))
            if len(values) >= 2:
                findings += _categorical_tests(
                    feature, index, observed, monitor, tested, len(findings)
                )
        elif index in measured:
            observed = measured[index].counts
            findings += _numeric_findings(
                feature, index, measured[index], monitor, tested, len(findings)
            )
        else:
            observed = bin_counts(columns[index], feature.edges)
        counts.append(FeatureCounts(feature.name, tuple(observed.tolist())))
    joint = _multivariate_finding(profile, window, monitor)
    if joint is not None:
        tested.append(len(findings))
        findings.append(joint)
    if tested:
        adjusted = correct(np.array([findings[i].p_value for i in tested]), monitor.correction)
        alpha = monitor.thresholds.alpha
        for position, adjusted_p in zip(tested, adjusted, strict=True):
            drifted = bool(adjusted_p < alpha)
            findings[position] = replace(
                findings[position],
                adjusted_p_value=float(adjusted_p),
                drifted=drifted,
                severity=_p_severity(float(adjusted_p), alpha) if drifted else Severity.NONE,
            )
    return WindowTests(findings, tuple(counts))


def _measure_numeric(profile: ReferenceProfile, columns: np.ndarray) -> dict[int, _Measured]:
    """KS, Wasserstein, PSI and Jensen-Shannon of every numeric feature with at least two
    finite values. Features stacked in the profile whose window column is all finite are
    measured together, as matrices; the rest one by one on their finite values."""
    stacked = profile.stacked
    together = np.isfinite(columns[stacked.indices]).all(axis=1) & (columns.shape[1] >= 2)
    measured: dict[int, _Measured] = {}
    if together.any():
        rows = stacked.indices[together]
        values = np.sort(columns[rows], axis=1)
        found = continuous_columns(stacked.sketches[together], values, stacked.sizes[together])
        counts = bin_counts_sorted(values, stacked.edges[together])
        psi = population_stability_indices(stacked.counts[together], counts)
        js = jensen_shannon_distances(stacked.counts[together], counts)
        for position, index in enumerate(rows.tolist()):
            measured[index] = _Measured(
                float(found.ks_statistic[position]),
                float(found.ks_p_value[position]),
                float(found.wasserstein[position]),
                float(psi[position]),
                float(js[position]),
                counts[position],
            )
    for index, feature in enumerate(profile.features):
        if feature.categorical or index in measured:
            continue
        values = columns[index][np.isfinite(columns[index])]
        if len(values) < 2:
            continue
        one = continuous(feature.sketch, values, feature.size)
        counts = bin_counts(values, feature.edges)
        measured[index] = _Measured(
            one.ks.statistic,
            one.ks.p_value if one.ks.p_value is not None else 1.0,
            one.wasserstein,
            population_stability_index(feature.counts, counts),
            jensen_shannon(feature.counts, counts),
            counts,
        )
    return measured


def _multivariate_finding(
    profile: ReferenceProfile, window: np.ndarray, monitor: Monitor
) -> Finding | None:
    """The window's rows against the reference's principal components (multivariate.py),
    decided after the correction with the per-feature tests."""
    if DriftTest.PCA_RECONSTRUCTION not in monitor.tests or profile.reconstruction is None:
        return None
    result = reconstruction_test(profile.reconstruction, window)
    if result is None or result.p_value is None:
        return None
    return Finding(
        MULTIVARIATE, -1, Kind.DATA, DriftTest.PCA_RECONSTRUCTION, result.statistic,
        monitor.thresholds.alpha, False, Severity.NONE, p_value=result.p_value,
    )  # fmt: skip


def _p_value_finding(
    feature: FeatureProfile, index: int, test: DriftTest, statistic: float, p_value: float,
    monitor: Monitor,
) -> Finding:  # fmt: skip
    """A test decided after the correction (see data_drift): not drifted yet."""
    alpha = monitor.thresholds.alpha
    return Finding(feature.name, index, Kind.DATA, test, statistic, alpha, False, Severity.NONE,
                   p_value=p_value)  # fmt: skip


def _categorical_tests(
    feature: FeatureProfile,
    index: int,
    observed: np.ndarray,
    monitor: Monitor,
    tested: list[int],
    offset: int,
) -> list[Finding]:
    """`observed`: the window's counts per reference category, then of unseen ones."""
    if DriftTest.CHI_SQUARE not in monitor.tests:
        return []
    reference = [*feature.categories.values(), 0]
    result = chi_square(np.array(reference), observed)
    tested.append(offset)
    return [
        _p_value_finding(
            feature, index, DriftTest.CHI_SQUARE, result.statistic, result.p_value or 1.0, monitor
        )
    ]


def _numeric_findings(
    feature: FeatureProfile,
    index: int,
    measured: _Measured,
    monitor: Monitor,
    tested: list[int],
    offset: int,
) -> list[Finding]:
    found: list[Finding] = []
    if DriftTest.KOLMOGOROV_SMIRNOV in monitor.tests:
        tested.append(offset)
        found.append(
            _p_value_finding(
                feature, index, DriftTest.KOLMOGOROV_SMIRNOV, measured.ks_statistic,
                measured.ks_p_value, monitor,
            )
        )  # fmt: skip
    distances = {
        DriftTest.POPULATION_STABILITY_INDEX: (measured.psi, monitor.thresholds.psi),
        DriftTest.WASSERSTEIN: (measured.wasserstein, monitor.thresholds.wasserstein),
        DriftTest.JENSEN_SHANNON: (measured.jensen_shannon, monitor.thresholds.jensen_shannon),
    }
    for test, (statistic, limit) in distances.items():
        if test not in monitor.tests:
            continue
        drifted = limit is not None and statistic > limit
        found.append(
            Finding(
                feature.name,
                index,
                Kind.DATA,
                test,
                statistic,
                limit if limit is not None else 0.0,
                drifted,
                _distance_severity(statistic, limit) if drifted else Severity.NONE,
            )
        )
    return found


def _p_severity(adjusted_p: float, alpha: float) -> Severity:
    if adjusted_p < alpha / 1000:
        return Severity.HIGH
    return Severity.MEDIUM


def _distance_severity(statistic: float, limit: float | None) -> Severity:
    if limit is not None and statistic > 2 * limit:
        return Severity.HIGH
    return Severity.MEDIUM


class _Rate(NamedTuple):
    """One quality rate of every feature: the window's counts, the absolute limit past
    which the rate is flagged whatever the reference's, and the test against the
    reference (computed only for the tests the monitor runs)."""

    window_count: np.ndarray
    limit: float
    p_values: Callable[[], np.ndarray]


def quality(
    profile: ReferenceProfile, window: np.ndarray, datatype: str, monitor: Monitor
) -> list[Finding]:
    """NaN, Inf and out-of-range rates per feature; a schema change for the whole window.

    A rate is flagged past its absolute limit, or when it is significantly higher than the
    reference's own rate of the same feature (NaN and Inf: a one-sided Fisher exact test;
    Bonferroni over the window's quality tests, at the monitor's alpha): a NaN rate rising
    from 0% to 4.5% is flagged under a 5% limit, one that was 4% in training data and is
    4.5% now is not.
    Out of range means outside the reference's [min, max]; its test asks whether more of the
    window falls there than an undrifted window would (`outside_range_p_values`).
    """
    if window.ndim != 2 or window.shape[1] != profile.width or datatype != profile.datatype:
        received = f"{datatype}{list(window.shape[1:])}"
        expected = f"{profile.datatype}[{profile.width}]"
        return [
            Finding(
                f"received {received}, reference {expected}",
                -1,
                Kind.QUALITY,
                DriftTest.SCHEMA_CHANGE,
                1.0,
                0.0,
                True,
                Severity.CRITICAL,
            )
        ]
    values = window.astype(np.float64)
    rows = max(values.shape[0], 1)
    features = profile.features
    minimum = np.array([f.minimum for f in features])
    maximum = np.array([f.maximum for f in features])
    finite = np.isfinite(values)
    outside = finite & ((values < minimum) | (values > maximum))
    thresholds = monitor.thresholds
    nans, infs = np.isnan(values).sum(axis=0), np.isinf(values).sum(axis=0)
    outside_count, finite_count = outside.sum(axis=0), finite.sum(axis=0)
    reference_nans = np.array([f.nan_count for f in features])
    reference_infs = np.array([f.inf_count for f in features])
    reference_finite = np.array([f.size for f in features])
    rates = {
        DriftTest.NAN_RATE: _Rate(
            nans, thresholds.nan_rate,
            lambda: higher_rate_p_values(nans, rows, reference_nans, profile.rows),
        ),
        DriftTest.INF_RATE: _Rate(
            infs, thresholds.inf_rate,
            lambda: higher_rate_p_values(infs, rows, reference_infs, profile.rows),
        ),
        DriftTest.OUT_OF_RANGE_RATE: _Rate(
            outside_count, thresholds.out_of_range_rate,
            lambda: outside_range_p_values(outside_count, finite_count, reference_finite),
        ),
    }  # fmt: skip
    tests = [test for test in rates if test in monitor.tests]
    comparisons = max(len(tests) * len(features), 1)
    p_values = {test: rates[test].p_values() for test in tests}
    findings = []
    for index, feature in enumerate(features):
        for test in tests:
            limit = rates[test].limit
            rate = int(rates[test].window_count[index]) / rows
            p_value = float(p_values[test][index])
            beyond_limit, higher = rate > limit, p_value < thresholds.alpha / comparisons
            severity = Severity.NONE
            if beyond_limit:
                severity = Severity.HIGH if rate > 5 * max(limit, 0.01) else Severity.MEDIUM
            elif higher:
                severity = Severity.MEDIUM
            findings.append(
                Finding(
                    feature.name, index, Kind.QUALITY, test, rate, limit,
                    beyond_limit or higher, severity, p_value=p_value,
                    adjusted_p_value=min(p_value * comparisons, 1.0),
                )
            )  # fmt: skip
    return findings


def prediction_drift(
    baseline_counts: dict[str, int], window_counts: dict[str, int], monitor: Monitor
) -> Finding | None:
    """The window's predicted classes (or output bins) against the version's first window."""
    if not baseline_counts or not window_counts or DriftTest.CHI_SQUARE not in monitor.tests:
        return None
    labels = sorted(set(baseline_counts) | set(window_counts))
    result = chi_square(
        np.array([baseline_counts.get(k, 0) for k in labels]),
        np.array([window_counts.get(k, 0) for k in labels]),
    )
    p_value = result.p_value if result.p_value is not None else 1.0
    alpha = monitor.thresholds.alpha
    drifted = p_value < alpha
    return Finding(
        "prediction",
        -1,
        Kind.PREDICTION,
        DriftTest.CHI_SQUARE,
        result.statistic,
        alpha,
        drifted,
        _p_severity(p_value, alpha) if drifted else Severity.NONE,
        p_value=p_value,
        adjusted_p_value=p_value,
    )


def alerting(findings: list[Finding], monitor: Monitor) -> list[Finding]:
    """The findings an alert reports: drifted and at least the monitor's minimum severity."""
    return [f for f in findings if f.drifted and f.severity >= monitor.min_alert_severity]
