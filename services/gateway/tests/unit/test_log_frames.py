"""Prediction logs written as protobuf by hand on the request path: the bytes are exactly
what protobuf makes of the same log, field by field."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.common.v1 import types_pb2 as common
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.prediction_logs import varint
from flywheel_common.timestamps import duration, epoch
from flywheel_gateway.log_frames import encode, model_of


def every_field() -> tuple[dict[str, object], PredictionLog]:
    """Each field of a log set to a value other than its default, as encode's arguments and
    as the message the same log is."""
    inputs = {
        "features": np.arange(6, dtype=np.float32).reshape(2, 3),
        "names": np.array([b"a", b"bc"], dtype=object),
    }
    outputs = {"label": np.array([1, 0], dtype=np.int64), "ok": np.array([True, False])}
    arguments: dict[str, object] = {
        "request_id": "req-é-1",
        "model": "iris",
        "version": 2**40,
        "role": common.TRAFFIC_ROLE_ARM,
        "inputs": inputs,
        "outputs": outputs,
        "latency": 1.25,
        "received_at": 1_765_000_000.123456,
        "trace_id": 0x0AF7651916CD43DD8448EB211C80319C,
        "span_id": 0xB7AD6B7169203331,
        "trace_flags": 1,
        "arm": "treatment",
        "shadow": True,
        "status_code": 3,
        "status_message": "input 'features' must be FP32",
        "nan_flagged": True,
        "sample_rate": 0.25,
        "gateway_id": "gw-1",
    }
    message = PredictionLog(
        request_id="req-é-1",
        model="iris",
        version=2**40,
        role=common.TRAFFIC_ROLE_ARM,
        arm="treatment",
        shadow=True,
        inputs=[
            common.Tensor(
                name="features", datatype="FP32", shape=[2, 3], data=inputs["features"].tobytes()
            ),
            common.Tensor(
                name="names",
                datatype="BYTES",
                shape=[2],
                data=b"\x01\x00\x00\x00a\x02\x00\x00\x00bc",
            ),
        ],
        outputs=[
            common.Tensor(
                name="label", datatype="INT64", shape=[2], data=outputs["label"].tobytes()
            ),
            common.Tensor(name="ok", datatype="BOOL", shape=[2], data=b"\x01\x00"),
        ],
        status_code=3,
        status_message="input 'features' must be FP32",
        latency=duration(1.25),
        nan_flagged=True,
        sample_rate=0.25,
        trace_id="0af7651916cd43dd8448eb211c80319c",
        traceparent="00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        gateway_id="gw-1",
        received_at=epoch(1_765_000_000.123456),
    )
    return arguments, message


def test_a_log_with_every_field_is_what_protobuf_writes() -> None:
    arguments, message = every_field()
    assert encode(**arguments) == message.SerializeToString()  # type: ignore[arg-type]
    assert PredictionLog.FromString(encode(**arguments)) == message  # type: ignore[arg-type]
    assert model_of(encode(**arguments)) == "iris"  # type: ignore[arg-type]


def test_a_log_with_default_fields_leaves_them_out_as_protobuf_does() -> None:
    plain = encode(
        request_id="",
        model="m",
        version=0,
        role=0,
        inputs={},
        outputs={},
        latency=0.0,
        received_at=1.5,
        sample_rate=0.0,
    )
    assert plain == PredictionLog(model="m", received_at=epoch(1.5)).SerializeToString()
    assert model_of(plain) == "m"
    untraced = encode(
        request_id="r" * 300,  # a length of two varint bytes
        model="é" * 200,
        version=1,
        role=common.TRAFFIC_ROLE_STABLE,
        inputs={"x": np.zeros((0, 4), dtype=np.float64)},
        outputs={},
        latency=0.001,
        received_at=2.0,
        status_code=-1,
    )
    expected = PredictionLog(
        request_id="r" * 300,
        model="é" * 200,
        version=1,
        role=common.TRAFFIC_ROLE_STABLE,
        inputs=[common.Tensor(name="x", datatype="FP64", shape=[0, 4])],
        status_code=-1,
        latency=duration(0.001),
        sample_rate=1.0,
        received_at=epoch(2.0),
    )
    assert untraced == expected.SerializeToString()
    assert model_of(untraced) == "é" * 200  # read from the whole message


def test_varints_are_protobufs_own() -> None:
    for value in [1, 127, 128, 300, 16383, 16384, 2**31, 2**63 - 1]:  # 0 is left out
        assert varint(value) == PredictionLog(version=value).SerializeToString()[1:]
    assert varint(-1) == PredictionLog(version=-1).SerializeToString()[1:]


def test_what_is_no_log_is_refused() -> None:
    with pytest.raises(ValueError, match="does not parse"):
        model_of(b"\x09 not a prediction log")
