"""Two-sample drift statistics between a reference and a window, and their corrections;
the quantile sketch a reference is kept as.

Each function takes plain arrays and matches scipy on the same arrays (the tests check it).
KS and Wasserstein share one merge of the samples: a detector runs them for every feature of
every window, and two scipy calls would sort twice and check inputs twice.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from scipy import special, stats

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


@dataclass(frozen=True)
class ContinuousColumns:
    """KS and Wasserstein of many numeric features, one entry per feature."""

    ks_statistic: np.ndarray
    ks_p_value: np.ndarray
    wasserstein: np.ndarray


def quantile_sketch(values: np.ndarray, size: int) -> np.ndarray:
    """At most `size` evenly spaced quantiles of `values`, sorted: all of them when fewer."""
    ordered = np.sort(values)
    if len(ordered) <= size:
        return ordered
    # Midpoint quantiles: each sketch point stands for an equal share of the reference.
    # Read by index from the sorted values (numpy's "inverted_cdf" quantiles): np.quantile
    # would partition the array again for every one of the `size` positions.
    positions = (np.arange(size) + 0.5) / size
    indices = np.clip(np.ceil(len(ordered) * positions).astype(np.int64) - 1, 0, len(ordered) - 1)
    return np.asarray(ordered[indices], dtype=np.float64)


def continuous(
    reference_sorted: np.ndarray, window: np.ndarray, reference_size: int | None = None
) -> Continuous:
    """`continuous_columns` of one feature."""
    sizes = None if reference_size is None else np.array([reference_size])
    columns = continuous_columns(reference_sorted[np.newaxis], np.sort(window)[np.newaxis], sizes)
    return Continuous(
        TestResult(float(columns.ks_statistic[0]), float(columns.ks_p_value[0])),
        float(columns.wasserstein[0]),
    )


def continuous_columns(
    reference_sorted: np.ndarray,
    window_sorted: np.ndarray,
    reference_sizes: np.ndarray | None = None,
) -> ContinuousColumns:
    """Two-sample Kolmogorov-Smirnov (two-sided, asymptotic p-value, as scipy's
    `ks_2samp(method="asymp")`) and the Wasserstein distance (as scipy's
    `wasserstein_distance`) of every feature at once: `reference_sorted` is [features, n]
    and `window_sorted` [features, m], each row sorted, all values finite.

    When a row of `reference_sorted` is a quantile sketch of a larger reference, its
    `reference_sizes` entry is that reference's size: the statistic is the sketch's (within
    half a sketch step of the full reference's), and the p-value is the full reference's,
    since how surprising a gap is depends on how many values it was measured on.

    Both samples are sorted already, so they are merged by position (two binary searches
    per feature) instead of sorting the pooled sample.
    The running sum of +1/n and -1/m steps is the difference of the two empirical CDFs: KS
    is its largest magnitude at the end of a run of tied values, Wasserstein its integral.
    Everything but the binary searches runs on the whole [features, n + m] matrix.
    """
    features, n = reference_sorted.shape
    m = window_sorted.shape[1]
    # Ties put reference values first; only the CDFs after the last of a tie are compared.
    reference_at = np.empty((features, n), dtype=np.int64)
    window_at = np.empty((features, m), dtype=np.int64)
    for row in range(features):
        reference_at[row] = np.searchsorted(window_sorted[row], reference_sorted[row], "left")
        window_at[row] = np.searchsorted(reference_sorted[row], window_sorted[row], "right")
    # Flat positions in the [features, n + m] merge: row start, then rank in the merge.
    row_starts = np.arange(features)[:, np.newaxis] * (n + m)
    reference_at += row_starts + np.arange(n)
    window_at += row_starts + np.arange(m)
    pooled = np.empty((features, n + m))
    pooled.ravel()[reference_at.ravel()] = reference_sorted.ravel()
    pooled.ravel()[window_at.ravel()] = window_sorted.ravel()
    # In units of 1/(n*m), integers: the statistic comes out exactly, the same bits for the
    # same gap in every window, which is what lets the p-value be memoized.
    steps = np.full((features, n + m), -n, dtype=np.int64)
    steps.ravel()[reference_at.ravel()] = m
    gaps = np.abs(np.cumsum(steps, axis=1))
    run_ends = np.ones((features, n + m), dtype=bool)
    np.not_equal(pooled[:, 1:], pooled[:, :-1], out=run_ends[:, :-1])
    statistics = np.where(run_ends, gaps, 0).max(axis=1) / (n * m)
    sizes = np.full(features, n) if reference_sizes is None else reference_sizes
    effective_n = np.round(sizes * m / (sizes + m))
    return ContinuousColumns(
        ks_statistic=statistics,
        ks_p_value=np.array(
            [
                _kolmogorov_sf(float(d), float(en))
                for d, en in zip(statistics, effective_n, strict=True)
            ]
        ),
        wasserstein=np.einsum("ij,ij->i", gaps[:, :-1], np.diff(pooled, axis=1)) / (n * m),
    )


@functools.lru_cache(maxsize=1 << 16)
def _kolmogorov_sf(statistic: float, effective_n: float) -> float:
    """P(D >= statistic) of the two-sided Kolmogorov distribution, as scipy's `ks_2samp`
    computes it. Memoized: scipy spends a quarter of a millisecond per value, a detector asks
    for one per feature per window, and a two-sample statistic takes at most lcm(n, m)
    distinct values, so windows of one size keep asking for the same few hundred."""
    return min(max(float(stats.kstwo.sf(statistic, effective_n)), 0.0), 1.0)


def higher_rate_p_values(
    window_counts: np.ndarray,
    window_sizes: np.ndarray | int,
    reference_counts: np.ndarray | int,
    reference_sizes: np.ndarray | int,
) -> np.ndarray:
    """One-sided Fisher exact test of each window rate being higher than the reference's:
    P(X >= k) for X hypergeometric, the k + K events of both samples spread over their
    n + N rows and n of them drawn for the window (scipy's `fisher_exact(alternative=
    "greater")`, for every feature at once)."""
    events = window_counts + reference_counts
    p = stats.hypergeom.sf(window_counts - 1, window_sizes + reference_sizes, events, window_sizes)
    return np.where(window_counts > 0, np.clip(p, 0.0, 1.0), 1.0)


def outside_range_p_values(
    outside_counts: np.ndarray,
    window_sizes: np.ndarray | Sequence[int],
    reference_sizes: np.ndarray | Sequence[int],
) -> np.ndarray:
    """P(S >= s) for each feature, S the window's values outside the reference's [min, max]
    when no drift makes the window's m values and the reference's n exchangeable, whatever
    their distribution.

    A reference spans its own range by construction, so an undrifted value still falls
    outside it with probability 2 / (n + 1): tested against the reference's own rate (none),
    a window that draws a value or two beyond a small reference's extremes is flagged several
    times as often as alpha allows. Exactly: the t values outside are the lowest and highest
    of the pooled sample, with all n reference values between them, so
    P(S = t) = (t + 1) C(n + m - t - 2, n - 2) / C(n + m, n). Computed as 1 - P(S < s), a
    sum over the few values below s that windows without drift have (within 1e-10).
    """
    counts = np.asarray(outside_counts, dtype=np.int64)
    p_values = np.ones(len(counts))
    m = np.broadcast_to(np.asarray(window_sizes, dtype=np.float64), counts.shape)
    n = np.broadcast_to(np.asarray(reference_sizes, dtype=np.float64), counts.shape)
    tested = (counts > 0) & (n >= 2)  # otherwise nothing is outside, or no range to be in
    if not tested.any():
        return p_values
    s, m, n = counts[tested, None], m[tested, None], n[tested, None]
    t = np.arange(int(s.max()))[None, :]
    below = t < s
    with np.errstate(invalid="ignore", divide="ignore"):  # t past a row's s: masked out
        log_pmf = (
            np.log(t + 1)
            + special.gammaln(n + m - t - 1)
            - special.gammaln(n - 1)
            - special.gammaln(m - t + 1)
            - (special.gammaln(n + m + 1) - special.gammaln(n + 1) - special.gammaln(m + 1))
        )
        head = np.where(below, np.exp(np.where(below, log_pmf, -np.inf)), 0.0).sum(axis=1)
    p_values[tested] = np.clip(1.0 - head, 0.0, 1.0)
    return p_values


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
    return float(population_stability_indices(reference_counts, window_counts))


def population_stability_indices(
    reference_counts: np.ndarray, window_counts: np.ndarray
) -> np.ndarray:
    """`population_stability_index` of each row of two [features, bins] count matrices."""
    reference = _shares(reference_counts)
    window = _shares(window_counts)
    return np.asarray(np.sum((window - reference) * np.log(window / reference), axis=-1))


def _shares(counts: np.ndarray) -> np.ndarray:
    """Shares of each bin along the last axis, floored at epsilon; uniform when empty."""
    counts = counts.astype(np.float64)
    totals = counts.sum(axis=-1, keepdims=True)
    bins = counts.shape[-1]
    shares = np.divide(counts, totals, out=np.full_like(counts, 1 / bins), where=totals > 0)
    floored = np.maximum(shares, PSI_EPSILON)
    return np.asarray(floored / floored.sum(axis=-1, keepdims=True), dtype=np.float64)


def jensen_shannon(reference_counts: np.ndarray, window_counts: np.ndarray) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two binned distributions."""
    return float(jensen_shannon_distances(reference_counts, window_counts))


def jensen_shannon_distances(reference_counts: np.ndarray, window_counts: np.ndarray) -> np.ndarray:
    """`jensen_shannon` of each row of two [features, bins] count matrices: scipy's
    `distance.jensenshannon(base=2)` by its definition, 0 where either side is empty."""
    reference_totals = reference_counts.sum(axis=-1, keepdims=True).astype(np.float64)
    window_totals = window_counts.sum(axis=-1, keepdims=True).astype(np.float64)
    empty = (reference_totals == 0) | (window_totals == 0)
    reference = reference_counts / np.where(empty, 1.0, reference_totals)
    window = window_counts / np.where(empty, 1.0, window_totals)
    middle = (reference + window) / 2
    divergence = (
        special.rel_entr(reference, middle).sum(axis=-1)
        + special.rel_entr(window, middle).sum(axis=-1)
    ) / 2
    distance = np.sqrt(np.maximum(divergence, 0.0) / np.log(2))
    return np.asarray(np.where(empty[..., 0], 0.0, distance))


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
