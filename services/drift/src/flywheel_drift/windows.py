"""Tumbling windows per model version, filled in batches, and the label join.

Pure state: the detector hands predictions over as `Observations`, a batch held column by
column, and this module decides when a window closes and what it measured. A batch is cut
into slices at window boundaries and each slice is taken whole (numpy, not a Python step per
prediction), which is what lets one core keep up with the gateways. Windows are counted
(every `size` predictions) or timed (every `seconds` of event time), and numbered, so that a
window's id is the same wherever and however often it is computed.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import compress
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np

from flywheel_drift.performance import ConfidenceHistogram, LabelTally


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
    confidence: float = float("nan")
    """The probability the model gave its predicted class; NaN when it logged none."""
    traceparent: str = ""


@dataclass(frozen=True)
class Observations:
    """Predictions of one model version in arrival order, column by column."""

    request_ids: Sequence[str]
    received_at: np.ndarray
    """Event time, seconds since the epoch, float64 [n]."""
    rows: np.ndarray
    """Input rows each prediction put in `features`, int64 [n]: 0 for failed requests."""
    features: np.ndarray
    """The input rows of the successful predictions, in order, [sum(rows), features]."""
    predictions: Sequence[str]
    """Predicted class (or output bin) of each prediction's first row."""
    latency_ms: np.ndarray
    failed: np.ndarray
    """bool [n]."""
    nan_flagged: np.ndarray
    """bool [n]."""
    confidence: np.ndarray = field(default_factory=lambda: np.empty(0))
    """Probability of each predicted class, float64 [n]; NaN where none was logged (and
    empty when no prediction of the batch logged one)."""
    traceparents: Sequence[str] = ()
    """The W3C traceparent of each prediction's request ("" when not traced; empty when
    none of the batch was)."""

    def __len__(self) -> int:
        return len(self.received_at)

    @property
    def row_offsets(self) -> np.ndarray:
        """Where each prediction's rows start in `features`, and one past the last, [n + 1]."""
        offsets = np.zeros(len(self) + 1, dtype=np.int64)
        np.cumsum(self.rows, out=offsets[1:])
        return offsets

    @classmethod
    def of(cls, observations: Sequence[Observation]) -> Observations:
        """Columns of observations given one by one (their features share a width)."""
        kept = [o.features if not o.failed else o.features[:0] for o in observations]
        return cls(
            request_ids=[o.request_id for o in observations],
            received_at=np.array([o.received_at for o in observations], dtype=np.float64),
            rows=np.array([len(features) for features in kept], dtype=np.int64),
            features=np.concatenate(kept) if kept else np.empty((0, 0)),
            predictions=[o.prediction for o in observations],
            latency_ms=np.array([o.latency_ms for o in observations], dtype=np.float64),
            failed=np.array([o.failed for o in observations], dtype=bool),
            nan_flagged=np.array([o.nan_flagged for o in observations], dtype=bool),
            confidence=np.array([o.confidence for o in observations], dtype=np.float64),
            traceparents=[o.traceparent for o in observations],
        )


@dataclass
class ClosedWindow:
    model: str
    version: int
    index: int
    start: float
    end: float
    """A time window's end; a count window's last event time."""
    requests: int
    errors: int
    nan_flagged: int
    features: np.ndarray
    """Every input row of the window's successful requests, [rows, features]."""
    predictions: dict[str, int]
    latencies_ms: np.ndarray
    labels: LabelTally = field(default_factory=LabelTally)
    confidence: ConfidenceHistogram = field(default_factory=ConfidenceHistogram)
    timed: bool = False
    """A time window (of event time), else a count window."""
    traceparent: str = ""
    """The trace of the last traced request of the window: what its alert continues."""

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
    def labeled(self) -> int:
        return self.labels.labeled

    @property
    def accuracy(self) -> float | None:
        return self.labels.correct / self.labeled if self.labeled else None

    @property
    def mean_absolute_error(self) -> float | None:
        return self.labels.absolute_error / self.labeled if self.labeled else None

    @property
    def root_mean_squared_error(self) -> float | None:
        return float(np.sqrt(self.labels.squared_error / self.labeled)) if self.labeled else None


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
    latencies: list[np.ndarray] = field(default_factory=list)
    labels: LabelTally = field(default_factory=LabelTally)
    confidence: ConfidenceHistogram = field(default_factory=ConfidenceHistogram)
    traceparent: str = ""

    def take(self, batch: Observations, offsets: np.ndarray, start: int, stop: int) -> None:
        """Predictions `start:stop` of `batch` join the window."""
        self.requests += stop - start
        self.end = max(self.end, float(batch.received_at[start:stop].max()))
        self.latencies.append(batch.latency_ms[start:stop])
        failed = batch.failed[start:stop]
        self.errors += int(failed.sum())
        self.nan_flagged += int(batch.nan_flagged[start:stop].sum())
        rows = batch.features[offsets[start] : offsets[stop]]
        if len(rows):
            self.rows.append(rows)
        succeeded = compress(batch.predictions[start:stop], ~failed)
        for label, count in Counter(succeeded).items():
            self.predictions[label] = self.predictions.get(label, 0) + count
        if len(batch.confidence):
            self.confidence.add(batch.confidence[start:stop][~failed])
        if batch.traceparents:
            self.traceparent = next(
                (t for t in reversed(batch.traceparents[start:stop]) if t), self.traceparent
            )

    def checkpoint(self) -> dict[str, Any]:
        # Checkpointed every batch: the parts are joined once here and kept joined, so a
        # window is not re-stacked from scratch at every checkpoint.
        if len(self.rows) > 1:
            self.rows = [_stacked(self.rows)]
        if len(self.latencies) > 1:
            self.latencies = [np.hstack(self.latencies)]
        return {
            "index": self.index,
            "start": self.start,
            "end": self.end,
            "requests": self.requests,
            "errors": self.errors,
            "nan_flagged": self.nan_flagged,
            "rows": self.rows[0] if self.rows else None,
            "predictions": self.predictions,
            "latencies": self.latencies[0] if self.latencies else None,
            "labels": self.labels.checkpoint(),
            "confidence": self.confidence.checkpoint(),
            "traceparent": self.traceparent,
        }

    @classmethod
    def from_checkpoint(cls, document: dict[str, Any]) -> _Open:
        rows, latencies = document["rows"], document["latencies"]
        return cls(
            index=document["index"],
            start=document["start"],
            end=document["end"],
            requests=document["requests"],
            errors=document["errors"],
            nan_flagged=document["nan_flagged"],
            rows=[rows] if rows is not None else [],
            predictions=dict(document["predictions"]),
            latencies=[latencies] if latencies is not None else [],
            labels=LabelTally.from_checkpoint(
                document.get("labels") or [document["labeled"], document["correct"]]
            ),
            confidence=ConfidenceHistogram.from_checkpoint(document.get("confidence")),
            traceparent=document.get("traceparent", ""),
        )


class VersionWindows:
    """The open window of one model version; `add` returns the windows it closed."""

    def __init__(self, model: str, version: int, policy: WindowPolicy) -> None:
        self.model = model
        self.version = version
        self._policy = policy
        self._open: _Open | None = None
        self._next_index = 0
        self._labels_between = LabelTally()
        """Labels that came while no window was open: the next one counts them."""

    def checkpoint(self) -> dict[str, Any]:
        """What a restart needs to carry on exactly here (see `from_checkpoint`)."""
        return {
            "policy": {"size": self._policy.size, "seconds": self._policy.seconds},
            "next_index": self._next_index,
            "labels_between": self._labels_between.checkpoint(),
            "open": self._open.checkpoint() if self._open is not None else None,
        }

    @classmethod
    def from_checkpoint(cls, model: str, version: int, document: dict[str, Any]) -> VersionWindows:
        windows = cls(model, version, WindowPolicy(**document["policy"]))
        windows._next_index = document["next_index"]
        windows._labels_between = LabelTally.from_checkpoint(document["labels_between"])
        if document["open"] is not None:
            windows._open = _Open.from_checkpoint(document["open"])
        return windows

    def add(self, batch: Observations) -> list[ClosedWindow]:
        closed: list[ClosedWindow] = []
        offsets = batch.row_offsets
        seconds, size = self._policy.seconds, self._policy.size
        start = 0
        while start < len(batch):
            window = self._window_for(float(batch.received_at[start]), closed)
            if seconds:
                # Up to the first prediction at or past the window's end (late ones stay).
                past = batch.received_at[start:] >= window.start + seconds
                stop = start + int(past.argmax()) if past.any() else len(batch)
            else:
                stop = min(len(batch), start + size - window.requests)
            window.take(batch, offsets, start, stop)
            if not seconds and window.requests >= size:
                closed.append(self._close())
            start = stop
        return closed

    def add_label(self, correct: bool, error: float | None = None) -> None:
        """A joined label counts toward the open window's accuracy, or error for a numeric
        prediction (else the next window's)."""
        window = self._open
        (window.labels if window is not None else self._labels_between).add(correct, error)

    def flush(self, now: float, grace: float = 0.0) -> list[ClosedWindow]:
        """Close a time window whose end passed more than `grace` seconds before `now`, even
        if no prediction arrived since. The grace leaves time for logs still on their way
        (the gateway and the stream batch them): they would find their window closed."""
        window = self._open
        if window is None or not self._policy.seconds:
            return []
        if now >= window.start + self._policy.seconds + grace:
            return [self._close()]
        return []

    def _window_for(self, event_time: float, closed: list[ClosedWindow]) -> _Open:
        seconds = self._policy.seconds
        if self._open is not None and seconds and event_time >= self._open.start + seconds:
            closed.append(self._close())
        if self._open is None:
            start = event_time
            if seconds:
                # A prediction whose own window has closed joins the next one: a window's
                # index and start always name the same span of event time.
                index = max(int(event_time // seconds), self._next_index)
                start = index * seconds
                self._next_index = index
            labels, self._labels_between = self._labels_between, LabelTally()
            self._open = _Open(self._next_index, start, start, labels=labels)
        return self._open

    def _close(self) -> ClosedWindow:
        window = self._open
        assert window is not None
        self._open = None
        self._next_index = window.index + 1
        rows = _stacked(window.rows) if window.rows else np.empty((0, 0))
        return ClosedWindow(
            model=self.model,
            version=self.version,
            index=window.index,
            start=window.start,
            end=window.start + self._policy.seconds if self._policy.seconds else window.end,
            requests=window.requests,
            errors=window.errors,
            nan_flagged=window.nan_flagged,
            features=rows,
            predictions=dict(window.predictions),
            latencies_ms=np.hstack(window.latencies).astype(np.float64)
            if window.latencies
            else np.empty(0),
            labels=window.labels,
            confidence=window.confidence,
            timed=bool(self._policy.seconds),
            traceparent=window.traceparent,
        )


def _stacked(parts: list[np.ndarray]) -> np.ndarray:
    """The rows of a window as one matrix. Should the feature count change within a window,
    the rows of the newest count are kept: the quality check reports the change."""
    width = parts[-1].shape[1]
    return np.concatenate([part for part in parts if part.shape[1] == width])


class Pending(NamedTuple):
    """A prediction waiting for its label (a tuple: the join holds up to a million)."""

    model: str
    version: int
    prediction: str
    received_at: float
    confidence: float | None = None
    """The probability the model gave its predicted class, if it logged one."""


E = TypeVar("E")


class WaitingLabel(NamedTuple):
    """Ground truth that came before its prediction."""

    label: str
    arrived_at: float


@dataclass
class JoinChanges:
    """What changed in a `LabelJoin` since the last `LabelJoin.changes()`, per side: the
    entries that now wait (by request id) and the request ids that stopped waiting."""

    predictions: dict[str, Pending] = field(default_factory=dict)
    predictions_gone: set[str] = field(default_factory=set)
    labels: dict[str, WaitingLabel] = field(default_factory=dict)
    labels_gone: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return (
            len(self.predictions)
            + len(self.predictions_gone)
            + len(self.labels)
            + len(self.labels_gone)
        )


class _Waiting(Generic[E]):
    """One side of the join: entries by request id, oldest first, and the request ids that
    changed since they were last drained."""

    def __init__(self, limit: int) -> None:
        self.entries: OrderedDict[str, E] = OrderedDict()
        self.touched: set[str] = set()
        self.limit = limit
        self.forgotten = 0

    def put(self, request_id: str, entry: E) -> None:
        self.put_many([(request_id, entry)])

    def put_many(self, entries: list[tuple[str, E]]) -> None:
        self.entries.update(entries)
        self.touched.update(request_id for request_id, _ in entries)
        while len(self.entries) > self.limit:
            self.forget_oldest()

    def take(self, request_id: str) -> E | None:
        entry = self.entries.pop(request_id, None)
        if entry is not None:
            self.touched.add(request_id)
        return entry

    def forget_oldest(self) -> None:
        request_id, _ = self.entries.popitem(last=False)
        self.touched.add(request_id)
        self.forgotten += 1

    def replay(self, waiting: dict[str, E], gone: set[str]) -> None:
        """Changes drained from another side (see `drain`), not counted as changes here."""
        for request_id in gone:
            self.entries.pop(request_id, None)
        self.entries.update(waiting)

    def drain(self) -> tuple[dict[str, E], set[str]]:
        """What waits now among the changed request ids, and which stopped waiting."""
        touched, self.touched = self.touched, set()
        waiting = {r: self.entries[r] for r in touched if r in self.entries}
        return waiting, touched - waiting.keys()


class LabelJoin:
    """Predictions waiting for their ground truth, by request id, for at most `wait_seconds`.

    Labels may arrive before their prediction (other topic, other lag): those wait too, and
    join when the prediction comes. Both sides expire after the wait, bounded in memory.
    The join remembers which request ids changed, so a checkpoint writes only those.
    """

    def __init__(self, wait_seconds: float, max_pending: int = 1_000_000) -> None:
        self._wait = wait_seconds
        self._predictions: _Waiting[Pending] = _Waiting(max_pending)
        self._labels: _Waiting[WaitingLabel] = _Waiting(max_pending)

    def prediction(self, request_id: str, pending: Pending) -> tuple[Pending, str] | None:
        early = self._labels.take(request_id)
        if early is not None:
            return pending, early.label
        self._predictions.put(request_id, pending)
        return None

    def predictions(self, arrived: list[tuple[str, Pending]]) -> list[tuple[Pending, str]]:
        """`prediction` for many, in order; returns those that joined a waiting label."""
        if self._labels.entries:
            found = (self.prediction(request_id, pending) for request_id, pending in arrived)
            return [joined for joined in found if joined is not None]
        self._predictions.put_many(arrived)  # nothing to join: one dict update
        return []

    def label(self, request_id: str, label: str, now: float) -> tuple[Pending, str] | None:
        pending = self._predictions.take(request_id)
        if pending is not None:
            return pending, label
        self._labels.put(request_id, WaitingLabel(label, now))
        return None

    def expire(self, now: float) -> None:
        """Forget what has waited longer than the wait (oldest first)."""
        predictions, labels = self._predictions, self._labels
        while predictions.entries:
            if now - next(iter(predictions.entries.values())).received_at <= self._wait:
                break
            predictions.forget_oldest()
        while labels.entries:
            if now - next(iter(labels.entries.values())).arrived_at <= self._wait:
                break
            labels.forget_oldest()

    def changes(self) -> JoinChanges:
        """The request ids changed since the last call, with what they hold now."""
        predictions, predictions_gone = self._predictions.drain()
        labels, labels_gone = self._labels.drain()
        return JoinChanges(predictions, predictions_gone, labels, labels_gone)

    def everything(self) -> JoinChanges:
        """All that waits, as the changes that rebuild it from an empty join."""
        return JoinChanges(dict(self._predictions.entries), set(), dict(self._labels.entries))

    def apply(self, changes: JoinChanges) -> None:
        """Replay changes taken from another join (a checkpoint's log), oldest first."""
        self._predictions.replay(changes.predictions, changes.predictions_gone)
        self._labels.replay(changes.labels, changes.labels_gone)

    @property
    def size(self) -> int:
        """Predictions and labels waiting."""
        return len(self._predictions.entries) + len(self._labels.entries)

    @property
    def waiting(self) -> int:
        return len(self._predictions.entries)

    @property
    def expired(self) -> int:
        return self._predictions.forgotten + self._labels.forgotten
