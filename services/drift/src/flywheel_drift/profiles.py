"""Reference profiles: what a model version's training inputs looked like, kept compact.

A profile keeps, per feature, a quantile sketch (evenly spaced quantiles of the reference,
at most `sketch_size` points) for the Kolmogorov-Smirnov test and the Wasserstein distance,
bin edges with reference counts for PSI and the Jensen-Shannon distance, the observed range
for out-of-range checks, and category counts for categorical features; for the whole set of
numeric features, the principal components of the multivariate test and a sketch of the
reference rows' distances from them (multivariate.py). Never the raw rows.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

from flywheel_common.prediction_logs import category_label
from flywheel_drift import multivariate
from flywheel_drift.statistics import quantile_sketch

DEFAULT_SKETCH_SIZE = 2000
DEFAULT_BINS = 10


@dataclass(frozen=True)
class FeatureProfile:
    name: str
    sketch: np.ndarray
    """Sorted quantiles of the reference values (finite values only)."""
    size: int
    """How many finite reference values the sketch summarizes (KS p-values use it)."""
    edges: np.ndarray
    """Interior bin edges; bins are (-inf, e0), [e0, e1), ..., [ek, +inf)."""
    counts: np.ndarray
    """Reference values per bin (len(edges) + 1)."""
    minimum: float
    maximum: float
    nan_count: int = 0
    """Reference rows where the feature is NaN (of the profile's `rows`)."""
    inf_count: int = 0
    """Reference rows where the feature is +-Inf."""
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
    reconstruction: multivariate.Reconstruction | None = None
    """The multivariate test's PCA, when the reference has enough numeric features and rows."""

    @property
    def width(self) -> int:
        return len(self.features)

    @functools.cached_property
    def stacked(self) -> StackedFeatures:
        """The numeric features whose sketches and bins have one common size, stacked into
        matrices so a window tests them all at once (the others are tested one by one)."""
        numeric = [i for i, f in enumerate(self.features) if not f.categorical]
        sizes = {(len(self.features[i].sketch), len(self.features[i].edges)) for i in numeric}
        common = max(sizes, key=lambda size: sum(
            (len(self.features[i].sketch), len(self.features[i].edges)) == size for i in numeric
        )) if sizes else (0, 0)  # fmt: skip
        indices = [
            i
            for i in numeric
            if (len(self.features[i].sketch), len(self.features[i].edges)) == common
        ]
        chosen = [self.features[i] for i in indices]
        return StackedFeatures(
            indices=np.array(indices, dtype=np.int64),
            sketches=np.array([f.sketch for f in chosen]).reshape(len(chosen), common[0]),
            edges=np.array([f.edges for f in chosen]).reshape(len(chosen), common[1]),
            counts=np.array([f.counts for f in chosen]).reshape(len(chosen), common[1] + 1),
            sizes=np.array([f.size for f in chosen], dtype=np.int64),
        )


@dataclass(frozen=True)
class StackedFeatures:
    """Numeric features of a profile as matrices, one row per feature."""

    indices: np.ndarray
    """Positions of the stacked features in the profile."""
    sketches: np.ndarray
    edges: np.ndarray
    counts: np.ndarray
    sizes: np.ndarray
    """Reference values behind each sketch."""


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts of finite values per bin of `edges` (see FeatureProfile.edges)."""
    finite = values[np.isfinite(values)]
    return np.bincount(np.searchsorted(edges, finite, side="right"), minlength=len(edges) + 1)


def bin_counts_sorted(values_sorted: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """`bin_counts` of every row of `values_sorted` [features, m] (rows sorted, all finite)
    in its row of `edges` [features, e]: [features, e + 1]. On sorted values a bin's count
    is the difference of where its two edges fall: e binary searches per feature, not m."""
    features, m = values_sorted.shape
    below = np.empty((features, edges.shape[1] + 2), dtype=np.int64)
    below[:, 0], below[:, -1] = 0, m
    for row in range(features):
        below[row, 1:-1] = np.searchsorted(values_sorted[row], edges[row], side="left")
    return np.diff(below, axis=1)


def category_counts(values: np.ndarray) -> dict[str, int]:
    finite = values[np.isfinite(values)]
    labels, counts = np.unique(finite, return_counts=True)
    return {category_label(label): int(count) for label, count in zip(labels, counts, strict=True)}


def categories_counts(values: np.ndarray, labels: list[str]) -> np.ndarray:
    """Counts of finite values per reference category of `labels`, plus one last bin for
    categories the reference never saw."""
    window = category_counts(values)
    known = set(labels)
    unseen = sum(count for label, count in window.items() if label not in known)
    return np.array([window.get(label, 0) for label in labels] + [unseen], dtype=np.int64)


@dataclass(frozen=True)
class FeatureCounts:
    """A feature's values in a window, counted in its reference bins (numeric) or categories
    and one more for unseen ones (categorical)."""

    feature: str
    counts: tuple[int, ...]


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
        nan_count, inf_count = int(np.isnan(column).sum()), int(np.isinf(column).sum())
        if not len(finite):
            finite = np.zeros(1)
        quantiles = np.unique(np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1]))
        features.append(
            FeatureProfile(
                name=name,
                sketch=quantile_sketch(finite, sketch_size),
                size=len(finite),
                nan_count=nan_count,
                inf_count=inf_count,
                edges=quantiles,
                counts=bin_counts(finite, quantiles),
                minimum=float(finite.min()),
                maximum=float(finite.max()),
                categories=category_counts(finite) if name in wanted_categorical else {},
            )
        )
    numeric = [index for index, feature in enumerate(features) if not feature.categorical]
    return ReferenceProfile(
        model,
        version,
        int(sample.shape[0]),
        tuple(features),
        datatype,
        multivariate.fit(sample, numeric, sketch_size),
    )
