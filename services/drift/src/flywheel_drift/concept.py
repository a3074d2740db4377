"""Streaming change detectors over a model's error stream (1 for a wrong prediction, or the
absolute error): the signal of concept drift once labels arrive."""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

import numpy as np


class ChangeDetector(Protocol):
    def update(self, value: float) -> bool:
        """Feed one observation; True when a change was detected at this observation."""
        ...

    @property
    def estimate(self) -> float:
        """The current estimate of the stream's mean."""
        ...

    def checkpoint(self) -> dict[str, Any]:
        """Its parameters and state, for `from_checkpoint`."""
        ...


class PageHinkley:
    """Page-Hinkley test for an increase of the mean.

    Accumulates the deviations from the running mean minus a tolerated drift `delta`; a
    change is signalled when the accumulation rises more than `threshold` above its minimum.
    The detector then restarts, so it signals each change once.
    """

    def __init__(self, delta: float = 0.005, threshold: float = 20.0, min_samples: int = 30):
        self._delta = delta
        self._threshold = threshold
        self._min_samples = min_samples
        self._reset()

    def _reset(self) -> None:
        self._count = 0
        self._mean = 0.0
        self._cumulative = 0.0
        self._minimum = 0.0

    @property
    def estimate(self) -> float:
        return self._mean

    def checkpoint(self) -> dict[str, Any]:
        return {
            "kind": "page_hinkley",
            "delta": self._delta,
            "threshold": self._threshold,
            "min_samples": self._min_samples,
            "count": self._count,
            "mean": self._mean,
            "cumulative": self._cumulative,
            "minimum": self._minimum,
        }

    @classmethod
    def from_checkpoint(cls, document: dict[str, Any]) -> PageHinkley:
        restored = cls(document["delta"], document["threshold"], document["min_samples"])
        restored._count = document["count"]
        restored._mean = document["mean"]
        restored._cumulative = document["cumulative"]
        restored._minimum = document["minimum"]
        return restored

    def update(self, value: float) -> bool:
        self._count += 1
        self._mean += (value - self._mean) / self._count
        self._cumulative += value - self._mean - self._delta
        self._minimum = min(self._minimum, self._cumulative)
        if self._count >= self._min_samples and self._cumulative - self._minimum > self._threshold:
            self._reset()
            return True
        return False


class Adwin:
    """ADWIN (adaptive windowing, Bifet and Gavaldà 2007) over a bounded window.

    Keeps the most recent observations (at most `max_window`); every `check_every`
    observations it looks for a split into an older and a newer part whose means differ by
    more than the Hoeffding bound at confidence `delta`, and drops the older part when it
    finds one: the window then holds only data from after the change.
    """

    def __init__(
        self,
        delta: float = 0.002,
        max_window: int = 5000,
        check_every: int = 32,
        min_side: int = 16,
    ) -> None:
        self._delta = delta
        self._values: deque[float] = deque(maxlen=max_window)
        self._check_every = check_every
        self._min_side = min_side
        self._since_check = 0

    @property
    def estimate(self) -> float:
        return float(np.mean(self._values)) if self._values else 0.0

    @property
    def width(self) -> int:
        return len(self._values)

    def checkpoint(self) -> dict[str, Any]:
        return {
            "kind": "adwin",
            "delta": self._delta,
            "max_window": self._values.maxlen,
            "check_every": self._check_every,
            "min_side": self._min_side,
            "since_check": self._since_check,
            "values": np.fromiter(self._values, dtype=np.float64, count=len(self._values)),
        }

    @classmethod
    def from_checkpoint(cls, document: dict[str, Any]) -> Adwin:
        restored = cls(
            document["delta"],
            document["max_window"],
            document["check_every"],
            document["min_side"],
        )
        restored._values.extend(document["values"].tolist())
        restored._since_check = document["since_check"]
        return restored

    def update(self, value: float) -> bool:
        self._values.append(value)
        self._since_check += 1
        if self._since_check < self._check_every:
            return False
        self._since_check = 0
        cut = self._find_cut()
        if cut is None:
            return False
        for _ in range(cut):
            self._values.popleft()
        return True

    def _find_cut(self) -> int | None:
        values = np.fromiter(self._values, dtype=np.float64)
        n = len(values)
        if n < 2 * self._min_side:
            return None
        sides = np.arange(self._min_side, n - self._min_side + 1)
        totals = np.cumsum(values)
        older_mean = totals[sides - 1] / sides
        newer_mean = (totals[-1] - totals[sides - 1]) / (n - sides)
        harmonic = 1 / (1 / sides + 1 / (n - sides))
        bound = np.sqrt(np.log(4 * n / self._delta) / (2 * harmonic))
        over = np.nonzero(np.abs(older_mean - newer_mean) > bound)[0]
        if not len(over):
            return None
        return int(sides[over[-1]])  # drop as much of the past as the evidence allows


def detector(
    kind: str, delta: float | None = None, threshold: float | None = None
) -> ChangeDetector:
    """A detector by name, `adwin` or `page_hinkley`, with optional parameters."""
    if kind == "page_hinkley":
        return PageHinkley(
            delta=0.005 if delta is None else delta,
            threshold=20.0 if threshold is None else threshold,
        )
    if kind == "adwin":
        return Adwin(delta=0.002 if delta is None else delta)
    raise ValueError(f"unknown change detector {kind!r}: use adwin or page_hinkley")


def detector_from_checkpoint(document: dict[str, Any]) -> ChangeDetector:
    """The detector a `checkpoint()` describes."""
    if document["kind"] == "page_hinkley":
        return PageHinkley.from_checkpoint(document)
    if document["kind"] == "adwin":
        return Adwin.from_checkpoint(document)
    raise ValueError(f"unknown change detector {document['kind']!r} in a checkpoint")
