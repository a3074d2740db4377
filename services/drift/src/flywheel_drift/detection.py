"""One window against its reference: data drift, prediction drift and data quality findings.

Only tests with a p-value decide drift statistically, after the multiple-testing correction
over every feature of the window, so the false-alarm rate of a window stays at alpha.
Distances (PSI, Wasserstein, Jensen-Shannon) are always reported and alert only when the
monitor sets a threshold for them.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import IntEnum, StrEnum

import numpy as np

from flywheel_drift.profiles import FeatureProfile, ReferenceProfile, bin_counts, category_counts
from flywheel_drift.statistics import (
    Correction,
    chi_square,
    continuous,
    correct,
    jensen_shannon,
    population_stability_index,
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


@dataclass(frozen=True)
class Monitor:
    """How one model is watched (the domain side of MonitorConfig)."""

    tests: frozenset[DriftTest] = ALL_TESTS
    thresholds: Thresholds = field(default_factory=Thresholds)
    correction: Correction = Correction.BENJAMINI_HOCHBERG
    min_alert_severity: Severity = Severity.MEDIUM


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


def data_drift(profile: ReferenceProfile, window: np.ndarray, monitor: Monitor) -> list[Finding]:
    """Per-feature two-sample tests of a [rows, features] window against the profile."""
    findings: list[Finding] = []
    tested: list[int] = []  # indices into findings of tests with p-values
    for index, feature in enumerate(profile.features):
        values = window[:, index].astype(np.float64)
        finite = values[np.isfinite(values)]
        if len(finite) < 2:
            continue
        findings += _feature_tests(feature, index, finite, monitor, tested, len(findings))
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
    return findings


def _feature_tests(
    feature: FeatureProfile,
    index: int,
    values: np.ndarray,
    monitor: Monitor,
    tested: list[int],
    offset: int,
) -> list[Finding]:
    found: list[Finding] = []
    alpha = monitor.thresholds.alpha

    def pending(test: DriftTest, statistic: float, p_value: float) -> None:
        tested.append(offset + len(found))
        found.append(
            Finding(feature.name, index, Kind.DATA, test, statistic, alpha, False, Severity.NONE,
                    p_value=p_value)
        )  # fmt: skip

    if feature.categorical:
        if DriftTest.CHI_SQUARE in monitor.tests:
            labels = list(feature.categories)
            observed = _category_counts(values, labels)
            result = chi_square(np.array([feature.categories[k] for k in labels] + [0]), observed)
            pending(DriftTest.CHI_SQUARE, result.statistic, result.p_value or 1.0)
        return found
    measured = continuous(feature.sketch, values)
    if DriftTest.KOLMOGOROV_SMIRNOV in monitor.tests:
        assert measured.ks.p_value is not None
        pending(DriftTest.KOLMOGOROV_SMIRNOV, measured.ks.statistic, measured.ks.p_value)
    counts = bin_counts(values, feature.edges)
    distances = {
        DriftTest.POPULATION_STABILITY_INDEX: (
            population_stability_index(feature.counts, counts),
            monitor.thresholds.psi,
        ),
        DriftTest.WASSERSTEIN: (measured.wasserstein, monitor.thresholds.wasserstein),
        DriftTest.JENSEN_SHANNON: (
            jensen_shannon(feature.counts, counts),
            monitor.thresholds.jensen_shannon,
        ),
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


def _category_counts(values: np.ndarray, labels: list[str]) -> np.ndarray:
    """Window counts per reference category, plus one last bin for categories never seen."""
    window = category_counts(values)
    known = set(labels)
    unseen = sum(count for label, count in window.items() if label not in known)
    return np.array([window.get(label, 0) for label in labels] + [unseen], dtype=np.int64)


def _p_severity(adjusted_p: float, alpha: float) -> Severity:
    if adjusted_p < alpha / 1000:
        return Severity.HIGH
    return Severity.MEDIUM


def _distance_severity(statistic: float, limit: float | None) -> Severity:
    if limit is not None and statistic > 2 * limit:
        return Severity.HIGH
    return Severity.MEDIUM


def quality(
    profile: ReferenceProfile, window: np.ndarray, datatype: str, monitor: Monitor
) -> list[Finding]:
    """NaN, Inf and out-of-range rates per feature; a schema change for the whole window."""
    thresholds = monitor.thresholds
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
    findings = []
    rows = max(window.shape[0], 1)
    for index, feature in enumerate(profile.features):
        values = window[:, index].astype(np.float64)
        finite = values[np.isfinite(values)]
        rates = {
            DriftTest.NAN_RATE: (float(np.isnan(values).sum()) / rows, thresholds.nan_rate),
            DriftTest.INF_RATE: (float(np.isinf(values).sum()) / rows, thresholds.inf_rate),
            DriftTest.OUT_OF_RANGE_RATE: (
                float(((finite < feature.minimum) | (finite > feature.maximum)).sum()) / rows,
                thresholds.out_of_range_rate,
            ),
        }
        for test, (rate, limit) in rates.items():
            if test not in monitor.tests:
                continue
            drifted = rate > limit
            severity = Severity.NONE
            if drifted:
                severity = Severity.HIGH if rate > 5 * max(limit, 0.01) else Severity.MEDIUM
            findings.append(
                Finding(feature.name, index, Kind.QUALITY, test, rate, limit, drifted, severity)
            )
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
