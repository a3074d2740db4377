"""Windows close where they should, with what they saw; labels join within their wait."""

from dataclasses import replace

import numpy as np
import pytest

from flywheel_drift.windows import (
    JoinChanges,
    LabelJoin,
    Observation,
    Observations,
    Pending,
    VersionWindows,
    WaitingLabel,
    WindowPolicy,
)


def observation(n: int, at: float = 0.0, failed: bool = False, label: str = "1") -> Observation:
    return Observation(
        request_id=f"r{n}",
        received_at=at,
        features=np.full((1, 3), float(n)),
        prediction=label,
        latency_ms=float(n % 10),
        failed=failed,
    )


def test_count_windows_close_every_size_requests_across_batches() -> None:
    windows = VersionWindows("iris", 2, WindowPolicy(size=100))
    closed = windows.add(Observations.of([observation(n) for n in range(70)]))
    assert closed == []
    closed = windows.add(Observations.of([observation(n, failed=n == 75) for n in range(70, 250)]))
    assert [w.index for w in closed] == [0, 1]
    first, second = closed
    assert (first.requests, first.errors) == (100, 1)
    assert first.features.shape == (99, 3)
    assert first.window_id == "iris:2:0"
    assert second.features[0, 0] == 100.0
    assert first.predictions == {"1": 99}
    assert first.latency_quantiles()["max"] == 9.0


def test_a_window_continues_the_trace_of_its_last_traced_request() -> None:
    def traced(n: int) -> Observation:
        return replace(observation(n), traceparent=f"00-{n:032x}-{n:016x}-01")

    windows = VersionWindows("iris", 1, WindowPolicy(size=5))
    [first] = windows.add(Observations.of([traced(n) for n in range(7)]))
    assert first.traceparent == traced(4).traceparent
    resumed = VersionWindows.from_checkpoint("iris", 1, windows.checkpoint())
    [second] = resumed.add(Observations.of([observation(n) for n in range(7, 10)]))
    assert second.traceparent == traced(6).traceparent  # its last three were not traced


def test_time_windows_are_aligned_numbered_and_flushed_when_idle() -> None:
    windows = VersionWindows("iris", 1, WindowPolicy(seconds=60))
    assert windows.add(Observations.of([observation(1, at=130.0), observation(2, at=170.0)])) == []
    [closed] = windows.add(Observations.of([observation(3, at=185.0)]))
    assert (closed.index, closed.start, closed.requests) == (2, 120.0, 2)
    assert windows.flush(now=200.0) == []
    [idle] = windows.flush(now=240.0)
    assert (idle.index, idle.requests) == (3, 1)


def test_idle_time_windows_wait_out_the_grace_for_late_predictions() -> None:
    windows = VersionWindows("iris", 1, WindowPolicy(seconds=60))
    windows.add(Observations.of([observation(1, at=130.0)]))
    assert windows.flush(now=185.0, grace=10.0) == []
    assert windows.add(Observations.of([observation(2, at=179.0)])) == []  # late, still in
    [closed] = windows.flush(now=190.0, grace=10.0)
    assert (closed.index, closed.start, closed.requests) == (2, 120.0, 2)


def test_a_prediction_later_than_its_closed_window_counts_in_the_next_one() -> None:
    windows = VersionWindows("iris", 1, WindowPolicy(seconds=60))
    windows.add(Observations.of([observation(1, at=130.0)]))
    [first] = windows.flush(now=200.0)
    assert (first.index, first.start) == (2, 120.0)
    # Window 2 (120-180 s) is gone: a prediction of 170 s opens window 3, not a second 2.
    [late] = windows.add(Observations.of([observation(2, at=170.0), observation(3, at=245.0)]))
    assert (late.index, late.start, late.end, late.requests) == (3, 180.0, 240.0, 1)
    [last] = windows.flush(now=400.0)
    assert (last.index, last.start, last.requests) == (4, 240.0, 1)


def test_labels_count_toward_the_open_window() -> None:
    windows = VersionWindows("iris", 1, WindowPolicy(size=4))
    windows.add(Observations.of([observation(n) for n in range(2)]))
    windows.add_label(True)
    windows.add_label(False)
    [closed] = windows.add(Observations.of([observation(n) for n in range(2, 4)]))
    assert (closed.labeled, closed.labels.correct, closed.accuracy) == (2, 1, 0.5)


def test_labels_joined_between_windows_count_in_the_next_one() -> None:
    windows = VersionWindows("iris", 1, WindowPolicy(size=2))
    windows.add(Observations.of([observation(n) for n in range(2)]))  # closes window 0
    windows.add_label(True)
    windows.add_label(False)
    [closed] = windows.add(Observations.of([observation(n) for n in range(2, 4)]))
    assert (closed.index, closed.labeled, closed.labels.correct) == (1, 2, 1)


def test_the_join_reports_what_changed_since_the_last_checkpoint() -> None:
    join = LabelJoin(wait_seconds=30)
    join.prediction("a", Pending("iris", 1, "1", 100.0))
    join.prediction("b", Pending("iris", 1, "0", 101.0))
    join.label("c", "1", now=102.0)
    first = join.changes()
    assert set(first.predictions) == {"a", "b"}
    assert set(first.labels) == {"c"}
    assert not first.predictions_gone
    assert not first.labels_gone
    assert not join.changes()  # nothing since
    join.label("a", "1", now=103.0)  # joins: a stops waiting
    join.prediction("c", Pending("iris", 1, "1", 104.0))  # joins the early label c
    join.expire(now=131.5)  # b has waited over 30 s
    second = join.changes()
    assert (second.predictions, second.labels) == ({}, {})
    assert second.predictions_gone == {"a", "b"}
    assert second.labels_gone == {"c"}
    restored = LabelJoin(wait_seconds=30)
    restored.apply(second)
    restored.apply(first)  # an older log replayed later would bring a, b and c back...
    restored.apply(second)  # ...which the changes after it take away again
    assert restored.size == 0
    restored.apply(
        JoinChanges(
            predictions={"d": Pending("iris", 1, "1", 120.0)},
            labels={"e": WaitingLabel("0", 121.0)},
        )
    )
    assert restored.everything().predictions == {"d": Pending("iris", 1, "1", 120.0)}
    assert restored.label("d", "1", now=125.0) == (Pending("iris", 1, "1", 120.0), "1")
    assert restored.prediction("e", Pending("iris", 1, "0", 126.0)) == (
        Pending("iris", 1, "0", 126.0),
        "0",
    )


def test_labels_join_in_either_order_and_expire_after_the_wait() -> None:
    join = LabelJoin(wait_seconds=30)
    pending = Pending("iris", 1, "2", received_at=100.0)
    assert join.prediction("a", pending) is None
    assert join.label("a", "2", now=110.0) == (pending, "2")
    assert join.label("b", "0", now=110.0) is None  # the label came first
    assert join.prediction("b", Pending("iris", 1, "1", 112.0)) == (
        Pending("iris", 1, "1", 112.0),
        "0",
    )
    join.prediction("c", Pending("iris", 1, "1", 120.0))
    join.expire(now=149.0)
    assert join.waiting == 1
    join.expire(now=151.0)
    assert (join.waiting, join.expired) == (0, 1)
    assert join.label("c", "1", now=152.0) is None  # too late: it waits as an early label


@pytest.mark.parametrize("size", [1, 7, 1000])
def test_every_request_lands_in_exactly_one_window(size: int) -> None:
    windows = VersionWindows("iris", 1, WindowPolicy(size=size))
    closed = []
    for start in range(0, 5000, 333):
        closed += windows.add(
            Observations.of([observation(n) for n in range(start, min(start + 333, 5000))])
        )
    assert sum(w.requests for w in closed) == (5000 // size) * size
    assert [w.index for w in closed] == list(range(5000 // size))


def test_one_batch_across_time_windows_closes_each_and_keeps_late_predictions() -> None:
    windows = VersionWindows("iris", 1, WindowPolicy(seconds=60))
    times = [10.0, 70.0, 65.0, 130.0, 500.0]
    closed = windows.add(Observations.of([observation(n, at=t) for n, t in enumerate(times)]))
    assert [(w.index, w.requests) for w in closed] == [(0, 1), (1, 2), (2, 1)]
    assert closed[1].features[:, 0].tolist() == [1.0, 2.0]  # 65 s came late: still window 1
    [idle] = windows.flush(now=600.0)
    assert (idle.index, idle.start, idle.requests) == (8, 480.0, 1)
