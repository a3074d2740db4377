"""Prediction logs packed per model and read back, one by one or in bulk, the same way."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.common.v1.types_pb2 import Tensor
from flywheel.drift.v1.ground_truth_pb2 import GroundTruth
from flywheel.gateway.v1.events_pb2 import PredictionLog, PredictionLogBatch
from flywheel_common.events import EventTypes, decode_event, header
from flywheel_common.prediction_logs import (
    first_confidences,
    first_label,
    first_labels,
    input_matrix,
    input_rows,
    pack,
    unpack,
)
from flywheel_common.topics import PREDICTIONS


def logged(
    request: str,
    rows: np.ndarray,
    label: float | int = 1,
    model: str = "iris",
    label_type: str = "INT64",
) -> PredictionLog:
    dtype = np.int64 if label_type == "INT64" else np.float32
    return PredictionLog(
        request_id=request,
        model=model,
        version=1,
        inputs=[
            Tensor(name="features", datatype="FP32", shape=list(rows.shape), data=rows.tobytes())
        ],
        outputs=[
            Tensor(name="probabilities", datatype="FP32", shape=[1, 1], data=b"\0\0\0\0"),
            Tensor(
                name="label",
                datatype=label_type,
                shape=[1],
                data=np.array([label], dtype).tobytes(),
            ),
        ],
    )


def test_pack_groups_by_model_caps_each_record_and_round_trips() -> None:
    rows = np.ones((1, 4), np.float32)
    logs = [logged(f"r{i}", rows, model="a" if i % 3 else "b") for i in range(10)]
    packed = pack(logs, source="gateway", per_record=4)
    assert [(record.key, count) for record, count in packed] == [
        (b"b", 4),
        (b"a", 4),
        (b"a", 2),
    ]
    types = EventTypes.flywheel()
    read = []
    for record, _ in packed:
        assert record.topic == PREDICTIONS.name
        assert header(record.headers, "ce_type") == "flywheel.gateway.v1.PredictionLogBatch"
        read += [
            log.request_id
            for log in unpack(decode_event(record.headers, record.value, types).message)
        ]
    assert sorted(read) == sorted(log.request_id for log in logs)
    assert read[4:] == [log.request_id for log in logs if log.model == "a"]  # in order


def test_pack_keeps_records_under_the_byte_limit_and_a_huge_log_alone() -> None:
    wide = np.ones((1, 1000), np.float32)  # about 4 kB a log
    logs = [logged(f"r{i}", wide) for i in range(10)]
    logs.insert(5, logged("huge", np.ones((1, 10_000), np.float32)))
    packed = pack(logs, source="gateway", per_record=200, max_bytes=10_000)
    assert [count for _, count in packed] == [2, 2, 1, 1, 2, 2, 1]
    assert all(len(record.value) <= 10_000 for record, count in packed if count > 1)
    assert sum(count for _, count in packed) == len(logs)


def test_a_packed_record_is_the_batch_message_of_its_logs_byte_for_byte() -> None:
    # Logs from 30 bytes to 400 kB: lengths of one, two and three varint bytes.
    widths = (1, 100, 5_000, 100_000)
    logs = [logged(f"r{width}", np.ones((1, width), np.float32)) for width in widths]
    packed = pack(logs, source="gateway")
    assert [count for _, count in packed] == [4]
    [(record, _)] = packed
    assert record.value == PredictionLogBatch(logs=logs).SerializeToString()


def test_unpack_takes_a_batch_or_one_log_and_refuses_anything_else() -> None:
    log = logged("r", np.ones((1, 2), np.float32))
    assert list(unpack(log)) == [log]
    assert list(unpack(PredictionLogBatch(logs=[log, log]))) == [log, log]
    with pytest.raises(ValueError, match="GroundTruth carries no prediction logs"):
        unpack(GroundTruth(request_id="r"))


def test_bulk_reading_equals_reading_log_by_log() -> None:
    rng = np.random.default_rng(7)
    logs = [
        logged(f"r{i}", rng.normal(size=(1 + i % 3, 5)).astype(np.float32), i % 4)
        for i in range(50)
    ]
    rows, matrix = input_matrix(logs)
    assert rows.tolist() == [1 + i % 3 for i in range(50)]
    np.testing.assert_array_equal(matrix, np.concatenate([input_rows(log) for log in logs]))
    assert (
        first_labels(logs) == [first_label(log) for log in logs] == [str(i % 4) for i in range(50)]
    )


def with_probabilities(request: str, probabilities: np.ndarray) -> PredictionLog:
    log = logged(request, np.ones((len(probabilities), 2), np.float32))
    log.outputs[0].CopyFrom(
        Tensor(
            name="probabilities",
            datatype="FP32",
            shape=list(probabilities.shape),
            data=probabilities.astype(np.float32).tobytes(),
        )
    )
    return log


def test_the_confidence_of_each_logs_first_prediction_is_its_largest_probability() -> None:
    logs = [
        with_probabilities("a", np.array([[0.1, 0.7, 0.2], [0.9, 0.05, 0.05]])),
        with_probabilities("b", np.array([[0.5, 0.25, 0.25]])),
    ]
    np.testing.assert_allclose(first_confidences(logs), [0.7, 0.5], rtol=1e-6)
    # Logs whose probabilities differ in width or are missing give no confidence at all.
    narrow = with_probabilities("c", np.array([[0.4, 0.6]]))
    assert len(first_confidences([*logs, narrow])) == 0
    assert len(first_confidences([PredictionLog(request_id="none")])) == 0


def test_mixed_logs_are_read_one_by_one_with_the_same_result() -> None:
    logs = [
        logged("wide", np.ones((1, 5), np.float32)),
        logged("float-label", np.ones((2, 5), np.float32), 2.5, label_type="FP32"),
        PredictionLog(request_id="no-input"),
        logged("narrow", np.ones((1, 3), np.float32)),
        logged("truncated", np.ones((1, 5), np.float32)),
    ]
    logs[-1].inputs[0].data = logs[-1].inputs[0].data[:-4]
    rows, matrix = input_matrix(logs)
    # The truncated tensor cannot be read; rows of a width other than most are left out.
    assert rows.tolist() == [1, 2, 0, 0, 0]
    assert matrix.shape == (3, 5)
    assert first_labels(logs) == ["1", "2.5", "", "1", "1"]
