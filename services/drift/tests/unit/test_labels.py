"""Ground truth forwarded packed: one record per model and batch, read back whole."""

from __future__ import annotations

import pytest

from flywheel.drift.v1.ground_truth_pb2 import GroundTruth, GroundTruthBatch
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.events import EventTypes, decode_message
from flywheel_common.topics import GROUND_TRUTH_BY_MODEL
from flywheel_drift import labels


def truth(index: int, model: str) -> GroundTruth:
    return GroundTruth(request_id=f"r{index}", model=model, int64_label=index % 3)


def read_back(record_value: bytes, headers: list[tuple[str, bytes]]) -> list[GroundTruth]:
    message = decode_message(headers, record_value, EventTypes.flywheel())
    return list(labels.carried(message))


def test_labels_go_as_one_record_per_model_in_their_order() -> None:
    truths = [truth(i, ("a", "b")[i % 2]) for i in range(7)]
    records = labels.forwarded(GROUND_TRUTH_BY_MODEL, truths, source="drift")
    assert [r.key for r in records] == [b"a", b"b"]
    assert {r.topic for r in records} == {GROUND_TRUTH_BY_MODEL.name}
    carried = {r.key: read_back(r.value, r.headers) for r in records}
    assert carried[b"a"] == truths[0::2]
    assert carried[b"b"] == truths[1::2]


def test_a_model_s_labels_split_by_count_and_size_keep_their_order() -> None:
    truths = [truth(i, "a") for i in range(50)]
    by_count = labels.forwarded(GROUND_TRUTH_BY_MODEL, truths, source="drift", per_record=20)
    assert [len(read_back(r.value, r.headers)) for r in by_count] == [20, 20, 10]
    by_size = labels.forwarded(GROUND_TRUTH_BY_MODEL, truths, source="drift", max_bytes=300)
    assert all(len(r.value) <= 300 for r in by_size)
    assert len(by_size) > 1
    assert [t for r in by_size for t in read_back(r.value, r.headers)] == truths


def test_a_single_forwarded_label_is_still_read_and_anything_else_refused() -> None:
    single = truth(1, "a")
    assert list(labels.carried(single)) == [single]
    assert list(labels.carried(GroundTruthBatch(labels=[single]))) == [single]
    with pytest.raises(ValueError, match="GroundTruthBatch"):
        labels.carried(PredictionLog(model="a"))


def test_a_label_without_its_model_cannot_be_routed() -> None:
    with pytest.raises(ValueError, match="model"):
        labels.routable(GroundTruth(request_id="r1", int64_label=1))
    with pytest.raises(ValueError, match="GroundTruth"):
        labels.routable(GroundTruthBatch())
