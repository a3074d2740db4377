"""Performance before and with labels: what a window's predictions are expected to score
from the model's own confidence, and the reference period each version learns it from.

Confidence-based performance estimation (CBPE): a classifier that gives each prediction the
probability p of its predicted class is right, on average, p of the time when p is
calibrated. So a window's expected accuracy is the mean calibrated confidence of its
predictions, known as soon as the predictions are, long before their labels arrive; when the
inputs move to where the model is less sure, the estimate falls with the accuracy. The
calibration is learnt per version from its first labelled predictions (its reference period),
confidence bin by confidence bin, and then frozen, so later concept drift does not teach it
to expect the decay it should report; until 100 labels have come, the probabilities are taken
as they are. What no confidence can show is a change of concept (the same inputs now meaning
another class): labels and the change detector over their errors catch that.

Regression models have no confidence to estimate from; their labels are scored by absolute
and squared error, and the error stream their change detector watches is whether an error is
larger than most errors of the reference period were (a bounded signal, whatever the target's
scale).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

CONFIDENCE_BINS = 20
"""Equal-width bins of a predicted class's probability over [0, 1]."""

REFERENCE_LABELS = 1000
"""Labelled predictions a version learns its calibration or error scale from."""

MIN_CALIBRATION_LABELS = 100
"""Labels before the calibration is used: with fewer, the probabilities are taken as they
are."""

LARGE_ERROR_QUANTILE = 0.9
"""An error above this quantile of the reference period's errors counts as a large one."""


class Task(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


def confidence_bins(confidence: np.ndarray) -> np.ndarray:
    """The bin of each confidence in [0, 1] (NaN means the model gave none: -1)."""
    bins = np.full(len(confidence), -1, dtype=np.int64)
    known = np.isfinite(confidence)
    bins[known] = np.clip(
        (confidence[known] * CONFIDENCE_BINS).astype(np.int64), 0, CONFIDENCE_BINS - 1
    )
    return bins


@dataclass
class ConfidenceHistogram:
    """The predictions of a window by confidence bin: how many, and their summed
    confidence (so a bin's raw expectation is its mean confidence)."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(CONFIDENCE_BINS, np.int64))
    sums: np.ndarray = field(default_factory=lambda: np.zeros(CONFIDENCE_BINS, np.float64))

    def add(self, confidence: np.ndarray) -> None:
        bins = confidence_bins(confidence)
        known = bins >= 0
        self.counts += np.bincount(bins[known], minlength=CONFIDENCE_BINS)
        self.sums += np.bincount(bins[known], confidence[known], minlength=CONFIDENCE_BINS)

    @property
    def total(self) -> int:
        return int(self.counts.sum())

    def checkpoint(self) -> dict[str, Any]:
        return {"counts": self.counts.copy(), "sums": self.sums.copy()}

    @classmethod
    def from_checkpoint(cls, document: dict[str, Any] | None) -> ConfidenceHistogram:
        if document is None:  # checkpoints from before the estimate
            return cls()
        return cls(np.asarray(document["counts"], np.int64), np.asarray(document["sums"]))


@dataclass(frozen=True)
class Estimate:
    """A window's expected accuracy from its predictions' confidence."""

    accuracy: float
    predictions: int
    """Predictions that logged their class probabilities (what the estimate covers)."""
    calibration_labels: int
    """Labels the calibration had learnt from; 0: the probabilities taken as they are."""


@dataclass
class Calibration:
    """How often predictions of each confidence bin were right in the version's reference
    period: its first `size` labelled predictions that logged a confidence."""

    size: int = REFERENCE_LABELS
    labeled: np.ndarray = field(default_factory=lambda: np.zeros(CONFIDENCE_BINS, np.int64))
    correct: np.ndarray = field(default_factory=lambda: np.zeros(CONFIDENCE_BINS, np.int64))

    @property
    def learnt(self) -> int:
        return int(self.labeled.sum())

    def learn(self, confidence: float | None, correct: bool) -> None:
        """A labelled prediction of the reference period (ignored once it is over)."""
        if confidence is None or self.learnt >= self.size:  # `learnt` sums an array
            return
        [bin_] = confidence_bins(np.array([confidence]))
        self.labeled[bin_] += 1
        self.correct[bin_] += int(correct)

    def estimate(self, window: ConfidenceHistogram) -> Estimate | None:
        """The expected accuracy of a window's predictions; None when none had a confidence."""
        if not window.total:
            return None
        present = window.counts > 0
        raw = np.zeros(CONFIDENCE_BINS)
        raw[present] = window.sums[present] / window.counts[present]
        if self.learnt < MIN_CALIBRATION_LABELS:
            return Estimate(float(window.sums.sum() / window.total), window.total, 0)
        accuracy = float((window.counts * self._accuracy_by_bin()).sum() / window.total)
        return Estimate(accuracy, window.total, self.learnt)

    def _accuracy_by_bin(self) -> np.ndarray:
        """Accuracy per confidence bin: the reference period's, made to rise with confidence
        (isotonic, weighted by labels, so thin bins borrow from their neighbours), between
        labelled bins interpolated, and beyond them moving one for one with confidence."""
        centres = (np.arange(CONFIDENCE_BINS) + 0.5) / CONFIDENCE_BINS
        seen = self.labeled > 0
        fitted = _isotonic(self.correct[seen] / self.labeled[seen], self.labeled[seen])
        known = centres[seen]
        accuracy = np.interp(centres, known, fitted)
        below, above = centres < known[0], centres > known[-1]
        accuracy[below] = fitted[0] + centres[below] - known[0]
        accuracy[above] = fitted[-1] + centres[above] - known[-1]
        return np.asarray(np.clip(accuracy, 0.0, 1.0))

    def checkpoint(self) -> dict[str, Any]:
        return {"size": self.size, "labeled": self.labeled.copy(), "correct": self.correct.copy()}

    @classmethod
    def from_checkpoint(cls, document: dict[str, Any] | None) -> Calibration:
        if document is None:
            return cls()
        return cls(
            document["size"],
            np.asarray(document["labeled"], np.int64),
            np.asarray(document["correct"], np.int64),
        )


def _isotonic(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence closest to `values` in weighted least squares (pool
    adjacent violators: a run that falls is replaced by its weighted mean)."""
    means: list[float] = []
    totals: list[float] = []
    lengths: list[int] = []
    for value, weight in zip(values.tolist(), weights.tolist(), strict=True):
        means.append(value)
        totals.append(weight)
        lengths.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            mean, total, length = means.pop(), totals.pop(), lengths.pop()
            pooled = totals[-1] + total
            means[-1] = (means[-1] * totals[-1] + mean * total) / pooled
            totals[-1] = pooled
            lengths[-1] += length
    return np.repeat(means, lengths)


@dataclass
class ErrorScale:
    """What a large error is for a regression version: above most absolute errors of its
    reference period (its first `size` labelled predictions)."""

    size: int = REFERENCE_LABELS
    errors: list[float] = field(default_factory=list)
    large: float | None = None
    """The threshold, once the reference period is over."""

    def signal(self, absolute_error: float) -> float | None:
        """1.0 for a large error, 0.0 for another; None while the reference period lasts."""
        if self.large is None:
            self.errors.append(absolute_error)
            if len(self.errors) >= self.size:
                self.large = float(np.quantile(self.errors, LARGE_ERROR_QUANTILE))
                self.errors = []
            return None
        return float(absolute_error > self.large)

    def checkpoint(self) -> dict[str, Any]:
        return {"size": self.size, "errors": np.array(self.errors), "large": self.large}

    @classmethod
    def from_checkpoint(cls, document: dict[str, Any] | None) -> ErrorScale:
        if document is None:
            return cls()
        return cls(document["size"], list(document["errors"].tolist()), document["large"])


@dataclass
class LabelTally:
    """Labels joined to a window's predictions, and how those predictions scored."""

    labeled: int = 0
    correct: int = 0
    absolute_error: float = 0.0
    squared_error: float = 0.0

    def add(self, correct: bool, error: float | None) -> None:
        """A label: whether the class was right, and the error of a numeric prediction."""
        self.labeled += 1
        self.correct += int(correct)
        if error is not None:
            self.absolute_error += abs(error)
            self.squared_error += error * error

    def merge(self, other: LabelTally) -> None:
        self.labeled += other.labeled
        self.correct += other.correct
        self.absolute_error += other.absolute_error
        self.squared_error += other.squared_error

    def checkpoint(self) -> list[float]:
        return [self.labeled, self.correct, self.absolute_error, self.squared_error]

    @classmethod
    def from_checkpoint(cls, values: list[float]) -> LabelTally:
        labeled, correct, *errors = values  # before regression: two values
        absolute, squared = errors or (0.0, 0.0)
        return cls(int(labeled), int(correct), float(absolute), float(squared))
