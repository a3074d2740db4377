"""Checkpoints: a versioned, self-describing format that restores windows, detectors and
the label join exactly, and refuses bytes it did not write (pickle among them)."""

import pickle

import numpy as np
import pytest

from flywheel_drift import checkpoints
from flywheel_drift.concept import Adwin, PageHinkley, detector_from_checkpoint
from flywheel_drift.windows import Observations, VersionWindows, WindowPolicy


def batch(start: float, count: int, features: int = 3) -> Observations:
    rng = np.random.default_rng(int(start))
    return Observations(
        request_ids=[f"r{start}-{i}" for i in range(count)],
        received_at=start + np.arange(count, dtype=np.float64) * 0.01,
        rows=np.ones(count, dtype=np.int64),
        features=rng.normal(size=(count, features)).astype(np.float32),
        predictions=[str(i % 2) for i in range(count)],
        latency_ms=np.full(count, 2.5),
        failed=np.zeros(count, dtype=bool),
        nan_flagged=np.zeros(count, dtype=bool),
    )


def test_documents_with_arrays_round_trip_exactly() -> None:
    document = {
        "empty": np.empty((0, 4), dtype=np.float32),
        "matrix": np.arange(12, dtype=np.float32).reshape(3, 4),
        "nested": [{"ints": np.array([1, -2, 3], dtype=np.int64)}, None, "text", 1.5],
        "bytes": np.frombuffer(b"\x00\xffproto", dtype=np.uint8),
    }
    restored = checkpoints.decode(checkpoints.encode(document))
    assert restored["empty"].shape == (0, 4)
    assert restored["empty"].dtype == np.float32
    assert np.array_equal(restored["matrix"], document["matrix"])
    assert restored["matrix"].dtype == np.float32
    assert restored["nested"][0]["ints"].tolist() == [1, -2, 3]
    assert restored["nested"][1:] == [None, "text", 1.5]
    assert restored["bytes"].tobytes() == b"\x00\xffproto"


def test_bytes_it_did_not_write_are_refused() -> None:
    with pytest.raises(checkpoints.UnreadableCheckpoint, match="FWCK"):
        checkpoints.decode(pickle.dumps({"windows": 1}))
    future = bytearray(checkpoints.encode({}))
    future[4] = 2
    with pytest.raises(checkpoints.UnreadableCheckpoint, match="format 2"):
        checkpoints.decode(bytes(future))


@pytest.mark.parametrize("policy", [WindowPolicy(size=100), WindowPolicy(seconds=10.0)])
def test_a_window_resumed_from_its_checkpoint_closes_as_the_original_would(
    policy: WindowPolicy,
) -> None:
    original = VersionWindows("iris", 1, policy)
    original.add(batch(1000.0, 30))
    original.add(batch(1000.4, 30))
    original.add_label(correct=True)
    resumed = VersionWindows.from_checkpoint(
        "iris", 1, checkpoints.decode(checkpoints.encode(original.checkpoint()))
    )
    closing = batch(1011.0, 80)
    expected, got = original.add(closing), resumed.add(closing)
    if policy.seconds:
        expected += original.flush(2000.0)
        got += resumed.flush(2000.0)
    assert len(got) == len(expected) >= 1
    assert got[0].labeled == expected[0].labeled == 1
    for mine, theirs in zip(got, expected, strict=True):
        assert (mine.index, mine.start, mine.end, mine.requests) == (
            theirs.index,
            theirs.start,
            theirs.end,
            theirs.requests,
        )
        assert mine.predictions == theirs.predictions
        assert np.array_equal(mine.features, theirs.features)
        assert np.array_equal(mine.latencies_ms, theirs.latencies_ms)


@pytest.mark.parametrize("make", [lambda: Adwin(check_every=8), lambda: PageHinkley()])
def test_change_detectors_resume_where_they_were(make: object) -> None:
    rng = np.random.default_rng(7)
    before = (rng.random(300) < 0.1).astype(float).tolist()
    after = (rng.random(300) < 0.6).astype(float).tolist()
    original = make()  # type: ignore[operator]
    for at, value in enumerate(before):
        original.update(value, float(at))
    resumed = detector_from_checkpoint(
        checkpoints.decode(checkpoints.encode(original.checkpoint()))
    )
    times = [float(at) for at in range(len(before), len(before) + len(after))]
    assert [original.update(v, t) for v, t in zip(after, times, strict=True)] == [
        resumed.update(v, t) for v, t in zip(after, times, strict=True)
    ]
    assert resumed.estimate == pytest.approx(original.estimate)
    assert resumed.change_began_at == original.change_began_at > 0
