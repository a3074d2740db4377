"""Tumbling windows per model version, filled in batches, and the label join.

Pure state: the stream layer decodes events into `Observation` batches and ground truth into
`Label`s; this module decides when a window closes and what it measured. Windows are counted
(every `size` predictions) or timed (every `seconds` of event time), and numbered, so that a
window's id is the same wherever and however often it is computed.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class WindowPolicy:
    size: int = 1000
    """Predictions per window (count windows)."""
    seconds: float = 0.0
    """Window length in event time (time windows); 0 means count windows."""


@dataclass(frozen=True)
class Observation:
    """One prediction as the drift detector needs it."""

    request_id: str
    received_at: float
    """Event time, seconds since the epoch."""
    features: np.ndarray
    """The request's input rows, [rows, features]."""
    prediction: str
    """The predicted class (or output bin) of the first row."""
    latency_ms: float
    failed: bool
    nan_flagged: bool = False


@dataclass
class ClosedWindow:
    model: str
    version: int
    index: int
    start: float
    end: float
    requests: int
    errors: int
    nan_flagged: int
    features: np.ndarray
    """Every input row of the window's successful requests, [rows, features]."""
    predictions: dict[str, int]
    latencies_ms: np.ndarray
    labeled: int = 0
    correct: int = 0

    @property
    def window_id(self) -> str:
        return f"{self.model}:{self.version}:{self.index}"

    def latency_quantiles(self) -> dict[str, float]:
        if not len(self.latencies_ms):
            return {"p50": 0.0, "p90": 0.0, "p99": 0.0, "mean": 0.0, "max": 0.0}
        p50, p90, p99 = np.quantile(self.latencies_ms, [0.5, 0.9, 0.99])
        return {
            "p50": float(p50),
            "p90": float(p90),
            "p99": float(p99),
            "mean": float(self.latencies_ms.mean()),
            "max": float(self.latencies_ms.max()),
        }

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.labeled if self.labeled else None


@dataclass
class _Open:
    index: int
    start: float
    end: float = 0.0
    requests: int = 0
    errors: int = 0
    nan_flagged: int = 0
    rows: list[np.ndarray] = field(default_factory=list)
    predictions: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    labeled: int = 0
    correct: int = 0

    def __getstate__(self) -> dict[str, Any]:
        # Checkpoints pickle the open window every batch: one array, not a thousand.
        state = dict(self.__dict__)
        if len(self.rows) > 1:
            self.rows = [np.concatenate(self.rows)]
            state["rows"] = self.rows
        return state


class VersionWindows:
    """The open window of one model version; `add` returns the windows it closed."""

    def __init__(self, model: str, version: int, policy: WindowPolicy) -> None:
        self.model = model
        self.version = version
        self._policy = policy
        self._open: _Open | None = None
        self._next_index = 0

    def add(self, batch: list[Observation]) -> list[ClosedWindow]:
        closed: list[ClosedWindow] = []
        for observation in batch:
            window = self._window_for(observation.received_at, closed)
            window.requests += 1
            window.end = max(window.end, observation.received_at)
            window.latencies.append(observation.latency_ms)
            if observation.failed:
                window.errors += 1
            else:
                window.rows.append(observation.features)
                label = observation.prediction
                window.predictions[label] = window.predictions.get(label, 0) + 1
            window.nan_flagged += observation.nan_flagged
            if not self._policy.seconds and window.requests >= self._policy.size:
                closed.append(self._close())
        return closed

    def add_label(self, correct: bool) -> None:
        """A joined label counts toward the open window's accuracy."""
        window = self._open
        if window is None:
            return
        window.labeled += 1
        window.correct += int(correct)

    def flush(self, now: float) -> list[ClosedWindow]:
        """Close a time window whose end has passed even if no prediction arrived since."""
        window = self._open
        if window is None or not self._policy.seconds:
            return []
        if now >= window.start + self._policy.seconds:
            return [self._close()]
        return []

    def _window_for(self, event_time: float, closed: list[ClosedWindow]) -> _Open:
        seconds = self._policy.seconds
        if self._open is not None and seconds and event_time >= self._open.start + seconds:
            closed.append(self._close())
        if self._open is None:
            start = event_time
            if seconds:
                index = int(event_time // seconds)
                start = index * seconds
                self._next_index = max(self._next_index, index)
            self._open = _Open(self._next_index, start, start)
        return self._open

    def _close(self) -> ClosedWindow:
        window = self._open
        assert window is not None
        self._open = None
        self._next_index = window.index + 1
        rows = np.concatenate(window.rows) if window.rows else np.empty((0, 0))
        return ClosedWindow(
            model=self.model,
            version=self.version,
            index=window.index,
            start=window.start,
            end=window.end,
            requests=window.requests,
            errors=window.errors,
            nan_flagged=window.nan_flagged,
            features=rows,
            predictions=dict(window.predictions),
            latencies_ms=np.array(window.latencies, dtype=np.float64),
            labeled=window.labeled,
            correct=window.correct,
        )


@dataclass(frozen=True)
class Pending:
    model: str
    version: int
    prediction: str
    received_at: float


class LabelJoin:
    """Predictions waiting for their ground truth, by request id, for at most `wait_seconds`.

    Labels may arrive before their prediction (other topic, other lag): those wait too, and
    join when the prediction comes. Both sides expire after the wait, bounded in memory.
    """

    def __init__(self, wait_seconds: float, max_pending: int = 1_000_000) -> None:
        self._wait = wait_seconds
        self._max = max_pending
        self._predictions: OrderedDict[str, Pending] = OrderedDict()
        self._labels: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self.expired = 0

    def prediction(self, request_id: str, pending: Pending) -> tuple[Pending, str] | None:
        early = self._labels.pop(request_id, None)
        if early is not None:
            return pending, early[0]
        self._predictions[request_id] = pending
        self._bound(self._predictions)
        return None

    def label(self, request_id: str, label: str, now: float) -> tuple[Pending, str] | None:
        pending = self._predictions.pop(request_id, None)
        if pending is not None:
            return pending, label
        self._labels[request_id] = (label, now)
        self._bound(self._labels)
        return None

    def expire(self, now: float) -> None:
        """Forget what has waited longer than the wait (oldest first)."""
        while self._predictions:
            oldest = next(iter(self._predictions.values()))
            if now - oldest.received_at <= self._wait:
                break
            self._predictions.popitem(last=False)
            self.expired += 1
        while self._labels:
            _, arrived = next(iter(self._labels.values()))
            if now - arrived <= self._wait:
                break
            self._labels.popitem(last=False)
            self.expired += 1

    @property
    def waiting(self) -> int:
        return len(self._predictions)

    def _bound(self, table: OrderedDict[str, Any]) -> None:
        while len(table) > self._max:
            table.popitem(last=False)
            self.expired += 1
