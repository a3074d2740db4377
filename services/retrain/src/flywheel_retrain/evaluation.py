"""Gate metrics: how well predictions match ground truth on the holdout, in pure numpy.

Labels arrive as category text (see `flywheel_common.prediction_logs.category_label`), so
classification metrics compare text and regression metrics parse numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool
    score: Callable[[Sequence[str], Sequence[str]], float]
    """score(truth, predicted)."""


def accuracy(truth: Sequence[str], predicted: Sequence[str]) -> float:
    _same_length(truth, predicted)
    return float(np.mean(np.asarray(truth) == np.asarray(predicted)))


def macro_f1(truth: Sequence[str], predicted: Sequence[str]) -> float:
    """Unweighted mean of each class's F1 over the classes present in either sequence."""
    _same_length(truth, predicted)
    actual, guessed = np.asarray(truth), np.asarray(predicted)
    scores = []
    for label in np.union1d(actual, guessed):
        true_positives = np.sum((actual == label) & (guessed == label))
        denominator = np.sum(actual == label) + np.sum(guessed == label)
        scores.append(2 * true_positives / denominator if denominator else 0.0)
    return float(np.mean(scores))


def mean_absolute_error(truth: Sequence[str], predicted: Sequence[str]) -> float:
    actual, guessed = _numbers(truth, predicted)
    return float(np.mean(np.abs(actual - guessed)))


def root_mean_squared_error(truth: Sequence[str], predicted: Sequence[str]) -> float:
    actual, guessed = _numbers(truth, predicted)
    return float(np.sqrt(np.mean((actual - guessed) ** 2)))


METRICS: dict[str, Metric] = {
    metric.name: metric
    for metric in (
        Metric("accuracy", True, accuracy),
        Metric("f1", True, macro_f1),
        Metric("mae", False, mean_absolute_error),
        Metric("rmse", False, root_mean_squared_error),
    )
}


def metric_named(name: str) -> Metric:
    """The gate metric called `name`; ValueError listing the known ones otherwise."""
    metric = METRICS.get(name)
    if metric is None:
        raise ValueError(f"unknown gate metric {name!r}; use one of {sorted(METRICS)}")
    return metric


def _same_length(truth: Sequence[str], predicted: Sequence[str]) -> None:
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} labels but {len(predicted)} predictions")
    if not truth:
        raise ValueError("no labeled rows to score")


def _numbers(truth: Sequence[str], predicted: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    _same_length(truth, predicted)
    try:
        return np.asarray(truth, dtype=np.float64), np.asarray(predicted, dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"a regression metric needs numeric labels: {error}") from error
