"""Streaming change detectors over a model's error stream (1 for a wrong prediction, or the
absolute error): the signal of concept drift once labels arrive."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np


class ChangeDetector(Protocol):
    def update(self, value: float, at: float = 0.0) -> bool:
        """Feed one observation, made at `at` (epoch seconds; 0 when unknown); True when a
        change was detected at this observation."""
        ...

    @property
    def change_began_at(self) -> float:
        """After a detected change: when the first observation after the change point was
        made, the detector's estimate of when the new regime began (0 when unknown). Data
        since then is the new regime's."""
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
    The detector then restarts, so it signals each change once. The change point is where
    the accumulation was at its minimum: the deviations rose from there on.
    """

    def __init__(self, delta: float = 0.005, threshold: float = 20.0, min_samples: int = 30):
        self._delta = delta
        self._threshold = threshold
        self._min_samples = min_samples
        self._reset()
        self.change_began_at = 0.0

    def _reset(self) -> None:
        self._count = 0
        self._mean = 0.0
        self._cumulative = 0.0
        self._minimum = 0.0
        self._rising_since = 0.0
        """When the first observation after the accumulation's minimum was made."""

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
            "rising_since": self._rising_since,
            "change_began_at": self.change_began_at,
        }

    @classmethod
    def from_checkpoint(cls, document: dict[str, Any]) -> PageHinkley:
        restored = cls(document["delta"], document["threshold"], document["min_samples"])
        restored._count = document["count"]
        restored._mean = document["mean"]
        restored._cumulative = document["cumulative"]
        restored._minimum = document["minimum"]
        restored._rising_since = document.get("rising_since", 0.0)
        restored.change_began_at = document.get("change_began_at", 0.0)
        return restored

    def update(self, value: float, at: float = 0.0) -> bool:
        self._count += 1
        self._mean += (value - self._mean) / self._count
        self._cumulative += value - self._mean - self._delta
        if self._cumulative <= self._minimum:
            self._minimum, self._rising_since = self._cumulative, at
        if self._count >= self._min_samples and self._cumulative - self._minimum > self._threshold:
            self.change_began_at = self._rising_since
            self._reset()
            return True
        return False


class Adwin:
    """ADWIN (adaptive windowing, Bifet and Gavaldà 2007) over a bounded window.

    Keeps the most recent observations (at most `max_window`); every `check_every`
    observations it looks for a split into an older and a newer part whose means differ by
    more than ADWIN's bound at confidence `delta`, and drops the older part when it finds
    one: the window then holds only data from after the change.

    The bound is the paper's variance-aware (Bernstein) form, with the window's variance: the
    plain Hoeffding bound assumes the largest variance there is, and cannot see an error rate
    move from 9% to 14% (a retrained model meeting the next change) in a window under 14,000.
    """

    def __init__(
        self,
        delta: float = 0.002,
        max_window: int = 10_000,
        check_every: int = 32,
        min_side: int = 16,
    ) -> None:
        self._delta = delta
        self._max_window = max_window
        # The window is _buffer[_start:_end]: appends and drops move the bounds, and the
        # values move back to the front only when the end reaches the buffer's end.
        self._buffer = np.empty(2 * max_window)
        self._times = np.zeros(2 * max_window)
        """When each observation of `_buffer` was made, at the same index."""
        self._start = self._end = 0
        self._total = 0.0
        """The sum of the window, kept as values come and go: the estimate is read per label."""
        self._check_every = check_every
        self._min_side = min_side
        self._since_check = 0
        self.change_began_at = 0.0

    @property
    def _values(self) -> np.ndarray:
        return self._buffer[self._start : self._end]

    @property
    def estimate(self) -> float:
        return self._total / self.width if self.width else 0.0

    @property
    def width(self) -> int:
        return self._end - self._start

    def checkpoint(self) -> dict[str, Any]:
        return {
            "kind": "adwin",
            "delta": self._delta,
            "max_window": self._max_window,
            "check_every": self._check_every,
            "min_side": self._min_side,
            "since_check": self._since_check,
            "values": self._values.copy(),
            "times": self._times[self._start : self._end].copy(),
            "change_began_at": self.change_began_at,
        }

    @classmethod
    def from_checkpoint(cls, document: dict[str, Any]) -> Adwin:
        restored = cls(
            document["delta"],
            document["max_window"],
            document["check_every"],
            document["min_side"],
        )
        values = np.asarray(document["values"], dtype=np.float64)[-restored._max_window :]
        restored._buffer[: len(values)] = values
        width = len(values)
        # Checkpoints written before the detector kept times restore with times unknown (0).
        times = np.asarray(document.get("times", np.zeros(width)), dtype=np.float64)
        restored._times[:width] = times[len(times) - width :]
        restored.change_began_at = document.get("change_began_at", 0.0)
        restored._end = len(values)
        restored._total = float(values.sum())
        restored._since_check = document["since_check"]
        return restored

    def update(self, value: float, at: float = 0.0) -> bool:
        if self._end == len(self._buffer):
            width = self.width
            self._buffer[:width] = self._buffer[self._start : self._end]
            self._times[:width] = self._times[self._start : self._end]
            self._start, self._end = 0, width
        self._buffer[self._end] = value
        self._times[self._end] = at
        self._end += 1
        self._total += value
        if self.width > self._max_window:
            self._total -= self._buffer[self._start]
            self._start += 1
        self._since_check += 1
        if self._since_check < self._check_every:
            return False
        self._since_check = 0
        return self._cut_at_change()

    def _cut_at_change(self) -> bool:
        """Drop the older part of the window if its mean differs from the newer part's;
        the running total is recomputed here, so it never drifts by rounding."""
        values = self._values
        n = len(values)
        totals = np.cumsum(values)
        self._total = float(totals[-1]) if n else 0.0
        if n < 2 * self._min_side:
            return False
        sides = np.arange(self._min_side, n - self._min_side + 1)
        older_total = totals[sides - 1]
        older_mean = older_total / sides
        newer_mean = (totals[-1] - older_total) / (n - sides)
        mean = totals[-1] / n
        variance = max(float(np.dot(values, values)) / n - mean * mean, 0.0)
        # eps = sqrt(2 var ln(2/d') / m) + 2 ln(2/d') / (3 m), with m = s(n-s)/n the
        # harmonic mean of the sides' sizes and d' = delta / n (every split is a test).
        harmonic = sides * (n - sides) / n
        log_term = np.log(2 * n / self._delta)
        bound = np.sqrt(2 * variance * log_term / harmonic) + 2 * log_term / (3 * harmonic)
        over = np.nonzero(np.abs(older_mean - newer_mean) > bound)[0]
        if not len(over):
            return False
        cut = int(sides[over[-1]])  # drop as much of the past as the evidence allows
        self._total = float(totals[-1] - totals[cut - 1])
        self._start += cut
        self.change_began_at = float(self._times[self._start])
        return True


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
