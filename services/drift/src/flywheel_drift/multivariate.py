"""The multivariate drift test: how far a window's rows fall from the principal components
of the reference, against how far unseen reference rows fall from them.

Per-feature tests see each feature's distribution alone, so a change in how features move
together (a correlation that flips sign, values never seen in one row) passes them all. A PCA
of the reference's standardized numeric features keeps the components that explain
`VARIANCE_KEPT` of their variance; a row's reconstruction error is its squared distance from
its projection on them. Rows that keep the reference's joint distribution have errors
distributed as reference rows' do; rows whose features move together differently leave the
components' span and have larger errors. The window's errors are compared with the
reference's by the two-sample Kolmogorov-Smirnov test: one p-value per window.

The components are fitted on one half of the reference rows and the reference's errors are
measured on the other half. The rows a PCA was fitted on have smaller errors than new rows
from the same distribution (its components lean toward them), and that bias alone would make
clean windows look drifted; a held-out half makes window rows and reference rows
exchangeable under no drift, so the p-value is what it says.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from flywheel_drift.statistics import TestResult, continuous, quantile_sketch

VARIANCE_KEPT = 0.9
"""Share of the standardized variance the kept components explain."""
MIN_ROWS = 20
"""Complete reference rows (every numeric feature finite) needed to fit the test."""
SPLIT_SEED = 0
"""Reference samples often come ordered (by time, by label): a seeded shuffle halves them
fairly, and the same way on every replica, so replicas find the same drift."""


@dataclass(frozen=True)
class Reconstruction:
    """A PCA of the reference's numeric features and its held-out rows' errors."""

    features: np.ndarray
    """Positions of the numeric features in the profile."""
    mean: np.ndarray
    scale: np.ndarray
    """Standard deviation of each feature; 1 for a constant one (its change counts in its
    own units)."""
    dropped: np.ndarray
    """[features - kept, features]: the axes the PCA leaves out, orthonormal rows in
    standardized units. With the kept components they make an orthonormal basis, so a row's
    squared distance from the kept components' span is its squared projection on these."""
    errors: np.ndarray
    """Quantile sketch of the held-out reference rows' reconstruction errors."""
    size: int
    """Held-out reference rows behind `errors` (KS p-values use it)."""

    def row_errors(self, values: np.ndarray) -> np.ndarray:
        """Squared reconstruction error of each row of [rows, features] finite values of
        the numeric features."""
        standardized = (values - self.mean) / self.scale
        # einsum, not matmul: a matrix product this small goes to the BLAS threads, which
        # on a busy machine wait for a core (15 ms a window instead of 0.6 measured on two
        # loaded cores) and spin after it, slowing the rest of the detector.
        off_span = np.einsum("ij,kj->ik", standardized, self.dropped)
        return np.asarray(np.einsum("ij,ij->i", off_span, off_span))


def fit(sample: np.ndarray, features: Sequence[int], sketch_size: int) -> Reconstruction | None:
    """The test for a [rows, width] reference sample over its `features` (the numeric
    ones); None with fewer than two features or `MIN_ROWS` complete rows, or no variance."""
    indices = np.asarray(features, dtype=np.int64)
    if len(indices) < 2:
        return None
    values = sample[:, indices].astype(np.float64)
    values = values[np.isfinite(values).all(axis=1)]
    if len(values) < MIN_ROWS:
        return None
    values = values[np.random.default_rng(SPLIT_SEED).permutation(len(values))]
    fitted, held_out = values[: len(values) // 2], values[len(values) // 2 :]
    mean = fitted.mean(axis=0)
    spread = fitted.std(axis=0, ddof=1)
    scale = np.where(spread > 0, spread, 1.0)
    standardized = (fitted - mean) / scale
    variances, vectors = np.linalg.eigh(standardized.T @ standardized / (len(fitted) - 1))
    variances, vectors = variances[::-1], vectors[:, ::-1]  # largest first
    total = variances.sum()
    if not total > 0:
        return None
    # Keeping every component would leave no error to measure.
    kept = min(int(np.searchsorted(np.cumsum(variances) / total, VARIANCE_KEPT)) + 1,
               len(indices) - 1)  # fmt: skip
    model = Reconstruction(
        indices, mean, scale, np.ascontiguousarray(vectors[:, kept:].T), np.empty(0), 0
    )
    errors = model.row_errors(held_out)
    return replace(model, errors=quantile_sketch(errors, sketch_size), size=len(errors))


def reconstruction_test(model: Reconstruction, window: np.ndarray) -> TestResult | None:
    """KS of the window's reconstruction errors against the reference's; rows with a NaN or
    Inf numeric feature are left out (quality checks report them). None under two rows."""
    values = np.asarray(window[:, model.features], dtype=np.float64)
    finite = np.isfinite(values).all(axis=1)
    if not finite.all():
        values = values[finite]
    if len(values) < 2:
        return None
    return continuous(model.errors, model.row_errors(values), model.size).ks
