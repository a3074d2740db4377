"""Reference profiles: what a model version's training inputs looked like, kept compact.

A profile keeps, per feature, a quantile sketch (evenly spaced quantiles of the reference,
at most `sketch_size` points) for the Kolmogorov-Smirnov test and the Wasserstein distance,
bin edges with reference counts for PSI and the Jensen-Shannon distance, the observed range
for out-of-range checks, and category counts for categorical features. Never the raw rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from flywheel_common.prediction_logs import category_label

DEFAULT_SKETCH_SIZE = 2000
DEFAULT_BINS = 10


@dataclass(frozen=True)
class FeatureProfile:
    name: str
    sketch: np.ndarray
    """Sorted quantiles of the reference values (finite values only)."""
    edges: np.ndarray
    """Interior bin edges; bins are (-inf, e0), [e0, e1), ..., [ek, +inf)."""
    counts: np.ndarray
    """Reference values per bin (len(edges) + 1)."""
    minimum: float
    maximum: float
    categories: dict[str, int] = field(default_factory=dict)
    """For categorical features: reference count per category (decimal text of the value)."""

    @property
    def categorical(self) -> bool:
        return bool(self.categories)


@dataclass(frozen=True)
class ReferenceProfile:
    model: str
    version: int
    rows: int
    features: tuple[FeatureProfile, ...]
    datatype: str = "FP32"

    @property
    def width(self) -> int:
        return len(self.features)


def _sketch(values: np.ndarray, size: int) -> np.ndarray:
    ordered = np.sort(values)
    if len(ordered) <= size:
        return ordered
    # Midpoint quantiles: each sketch point stands for an equal share of the reference.
    positions = (np.arange(size) + 0.5) / size
    return np.asarray(np.quantile(ordered, positions, method="inverted_cdf"), dtype=np.float64)


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of finite values per bin of `edges` (see FeatureProfile.edges)."""
    finite = values[np.isfinite(values)]
    return np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)


def category_counts(values: np.ndarray) -> dict[str, int]:
    finite = values[np.isfinite(values)]
    labels, counts = np.unique(finite, return_counts=True)
    return {category_label(label): int(count) for label, count in zip(labels, counts, strict=True)}


def build_profile(
    model: str,
    version: int,
    sample: np.ndarray,
    feature_names: list[str] | None = None,
    categorical: set[str] | None = None,
    sketch_size: int = DEFAULT_SKETCH_SIZE,
    bins: int = DEFAULT_BINS,
    datatype: str = "FP32",
) -> ReferenceProfile:
    """Profile a reference sample of shape [rows, features]."""
    if sample.ndim != 2 or sample.shape[0] < 2:
        raise ValueError(f"a reference sample is a [rows, features] matrix, got {sample.shape}")
    names = feature_names or [f"f{i}" for i in range(sample.shape[1])]
    if len(names) != sample.shape[1]:
        raise ValueError(f"{len(names)} feature names for {sample.shape[1]} features")
    wanted_categorical = categorical or set()
    features = []
    for index, name in enumerate(names):
        column = sample[:, index].astype(np.float64)
        finite = column[np.isfinite(column)]
        if not len(finite):
            finite = np.zeros(1)
        quantiles = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
        features.append(
            FeatureProfile(
                name=name,
                sketch=_sketch(finite, sketch_size),
                edges=quantiles,
                counts=bin_counts(finite, quantiles),
                minimum=float(finite.min()),
                maximum=float(finite.max()),
                categories=category_counts(finite) if name in wanted_categorical else {},
            )
        )
    return ReferenceProfile(model, version, int(sample.shape[0]), tuple(features), datatype)
