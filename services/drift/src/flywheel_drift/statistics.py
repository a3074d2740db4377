"""Two-sample drift statistics between a reference and a window, and their corrections.

Each function takes plain arrays and matches scipy on the same arrays (the tests check it).
KS and Wasserstein share one sort of the pooled sample: a detector runs them for every
feature of every window, and two scipy calls would sort twice and check inputs twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy import stats
from scipy.spatial import distance

PSI_EPSILON = 1e-4
"""Share given to empty bins so that PSI stays finite."""


@dataclass(frozen=True)
class TestResult:
    statistic: float
    p_value: float | None = None


@dataclass(frozen=True)
class Continuous:
    """KS and Wasserstein of one numeric feature, from one pass over the pooled sample."""

    ks: TestResult
    wasserstein: float


def continuous(reference_sorted: np.ndarray, window: np.ndarray) -> Continuous:
    """Two-sample Kolmogorov-Smirnov (two-sided, asymptotic p-value, as scipy's
    `ks_2samp(method="asymp")`) and the Wasserstein distance (as scipy's
    `wasserstein_distance`), sharing the sort and the two empirical CDFs."""
    window_sorted = np.sort(window)
    n, m = len(reference_sorted), len(window_sorted)
    pooled = np.sort(np.concatenate([reference_sorted, window_sorted]))
    gaps = np.abs(
        np.searchsorted(reference_sorted, pooled, side="right") / n
        - np.searchsorted(window_sorted, pooled, side="right") / m
    )
    statistic = float(gaps.max())
    p_value = float(stats.kstwo.sf(statistic, np.round(n * m / (n + m))))
    return Continuous(
        TestResult(statistic, min(max(p_value, 0.0), 1.0)),
        float(np.sum(gaps[:-1] * np.diff(pooled))),
    )


def chi_square(reference_counts: np.ndarray, window_counts: np.ndarray) -> TestResult:
    """Chi-square test of homogeneity on a 2 x k table of category counts.

    Categories absent from both samples are dropped; a single remaining category means the
    distributions cannot differ (statistic 0, p-value 1).
    """
    table = np.vstack([reference_counts, window_counts]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return TestResult(0.0, 1.0)
    statistic, p_value, _, _ = stats.chi2_contingency(table, correction=False)
    return TestResult(float(statistic), float(p_value))


def population_stability_index(reference_counts: np.ndarray, window_counts: np.ndarray) -> float:
    """PSI = sum((w - r) * ln(w / r)) over bins of shares, empty bins floored at epsilon."""
    reference = _shares(reference_counts)
    window = _shares(window_counts)
    return float(np.sum((window - reference) * np.log(window / reference)))


def _shares(counts: np.ndarray) -> np.ndarray:
    total = counts.sum()
    shares = counts / total if total else np.full(len(counts), 1 / len(counts))
    floored = np.maximum(shares, PSI_EPSILON)
    return np.asarray(floored / floored.sum(), dtype=np.float64)


def jensen_shannon(reference_counts: np.ndarray, window_counts: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two binned distributions."""
    if not reference_counts.sum() or not window_counts.sum():
        return 0.0
    return float(distance.jensenshannon(reference_counts, window_counts, base=2))


class Correction(StrEnum):
    NONE = "none"
    BONFERRONI = "bonferroni"
    BENJAMINI_HOCHBERG = "benjamini_hochberg"


def correct(p_values: np.ndarray, method: Correction) -> np.ndarray:
    """Adjusted p-values: compare them with alpha directly, whatever the method."""
    if not len(p_values):
        return p_values
    if method is Correction.BONFERRONI:
        return np.asarray(np.minimum(p_values * len(p_values), 1.0), dtype=np.float64)
    if method is Correction.BENJAMINI_HOCHBERG:
        return np.asarray(stats.false_discovery_control(p_values, method="bh"))
    return p_values
