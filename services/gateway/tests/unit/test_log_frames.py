"""Prediction log frames: what the shipper makes of a frame is the log the request path
would have built as a message, field for field."""

from __future__ import annotations

import numpy as np
import pytest

from flywheel.common.v1 import types_pb2 as common
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.timestamps import duration, epoch
from flywheel_gateway.log_frames import Span, decode, encode, encode_message, model_of, to_message


def every_field() -> tuple[dict[str, object], PredictionLog]:
    """Each field of a log set to a value other than its default, as encode's arguments and
    as the message the same log is."""
    inputs = {
        "features": np.arange(6, dtype=np.float32).reshape(2, 3),
        "names": np.array([b"a", b"bc"], dtype=object),
    }
    outputs = {"label": np.array([1, 0], dtype=np.int64), "ok": np.array([True, False])}
    span = Span(trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331, flags=1)
    arguments: dict[str, object] = {
        "request_id": "req-é-1",
        "model": "iris",
        "version": 2**40,
        "role": common.TRAFFIC_ROLE_ARM,
        "inputs": inputs,
        "outputs": outputs,
        "latency": 1.25,
        "received_at": 1_765_000_000.123456,
        "span": span,
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


def test_a_frame_decodes_to_the_log_with_every_field() -> None:
    arguments, message = every_field()
    frame = encode(**arguments)  # type: ignore[arg-type]
    assert model_of(frame) == "iris"
    assert to_message(frame) == message


def test_a_message_encoded_as_a_frame_decodes_to_itself() -> None:
    _, message = every_field()
    assert to_message(encode_message(message)) == message
    untraced = PredictionLog(
        request_id="r", model="m", version=1, latency=duration(0.001), received_at=epoch(1.5)
    )
    assert to_message(encode_message(untraced)) == untraced
    assert model_of(encode_message(untraced)) == "m"


def test_a_frame_cut_short_or_of_another_format_is_refused() -> None:
    _, message = every_field()
    frame = encode_message(message)
    with pytest.raises(ValueError, match="holds"):
        decode(frame + b"x")
    with pytest.raises(ValueError, match="cut short"):
        decode(frame[: len(frame) - 40])
    with pytest.raises(ValueError, match="cut short"):
        model_of(frame[:10])
    with pytest.raises(ValueError, match="format 9"):
        decode(b"\x09" + frame[1:])
