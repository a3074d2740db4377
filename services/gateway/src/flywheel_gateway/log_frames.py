"""Prediction logs as the serving process spools them: each one's `PredictionLog` protobuf
encoding, written directly from the request's fields on the request path.

Why not the message itself: building a `PredictionLog` with protobuf's constructor costs
the event loop 40-45 us per log in the serving process (`bench/prediction_logs.py`), and a
compact frame of our own had to be made into that message by the shipper, which cost as
much again. Writing the wire format here, with the parts that repeat from request to
request (a route's fields, a tensor's name, type and shape) encoded once and kept, costs
less than the constructor, and the shipper sends the bytes as they are: a
`PredictionLogBatch` is its logs' encodings, each after the field's tag and length.

The fields go in field-number order, defaults left out, as protobuf itself writes them: a
unit test checks the bytes against the message's own serialization, field by field.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

import numpy as np
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError, Message

from flywheel.common.v1.types_pb2 import Tensor
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.prediction_logs import varint
from flywheel_gateway.tensors import datatype_of, raw_of

_DOUBLE = struct.Struct("<d")
_NANOS = 1_000_000_000
_CACHED = 4096
"""Most encoded routes and tensor heads kept (each a few dozen bytes)."""


_VARINT, _FIXED64, _LENGTH_DELIMITED = 0, 1, 2


def _tag(message: type[Message], field: str, wire_type: int) -> bytes:
    """A field's tag: its number and wire type, as a varint."""
    return varint(message.DESCRIPTOR.fields_by_name[field].number << 3 | wire_type)


_REQUEST_ID = _tag(PredictionLog, "request_id", _LENGTH_DELIMITED)
_MODEL = _tag(PredictionLog, "model", _LENGTH_DELIMITED)
_VERSION = _tag(PredictionLog, "version", _VARINT)
_ROLE = _tag(PredictionLog, "role", _VARINT)
_ARM = _tag(PredictionLog, "arm", _LENGTH_DELIMITED)
_SHADOW = _tag(PredictionLog, "shadow", _VARINT)
_INPUTS = _tag(PredictionLog, "inputs", _LENGTH_DELIMITED)
_OUTPUTS = _tag(PredictionLog, "outputs", _LENGTH_DELIMITED)
_STATUS_CODE = _tag(PredictionLog, "status_code", _VARINT)
_STATUS_MESSAGE = _tag(PredictionLog, "status_message", _LENGTH_DELIMITED)
_LATENCY = _tag(PredictionLog, "latency", _LENGTH_DELIMITED)
_NAN_FLAGGED = _tag(PredictionLog, "nan_flagged", _VARINT)
_SAMPLE_RATE = _tag(PredictionLog, "sample_rate", _FIXED64)
_TRACE_ID = _tag(PredictionLog, "trace_id", _LENGTH_DELIMITED)
_GATEWAY_ID = _tag(PredictionLog, "gateway_id", _LENGTH_DELIMITED)
_RECEIVED_AT = _tag(PredictionLog, "received_at", _LENGTH_DELIMITED)
_TRACEPARENT = _tag(PredictionLog, "traceparent", _LENGTH_DELIMITED)
_TENSOR_NAME = _tag(Tensor, "name", _LENGTH_DELIMITED)
_TENSOR_DATATYPE = _tag(Tensor, "datatype", _LENGTH_DELIMITED)
_TENSOR_SHAPE = _tag(Tensor, "shape", _LENGTH_DELIMITED)  # packed
_TENSOR_DATA = _tag(Tensor, "data", _LENGTH_DELIMITED)
_SECONDS = _tag(Duration, "seconds", _VARINT)  # a Timestamp's fields are numbered alike
_NANOS_FIELD = _tag(Duration, "nanos", _VARINT)


def _text(tag: bytes, value: str) -> bytes:
    data = value.encode()
    return tag + varint(len(data)) + data


_routes: dict[tuple[str, int, int, str, bool], bytes] = {}
_tensor_heads: dict[tuple[bytes, str, str, tuple[int, ...], int], bytes] = {}


def _route(model: str, version: int, role: int, arm: str, shadow: bool) -> bytes:
    """Fields 2 to 6, the same for every request a route serves."""
    key = (model, version, role, arm, shadow)
    encoded = _routes.get(key)
    if encoded is None:
        parts = [
            _text(_MODEL, model) if model else b"",
            _VERSION + varint(version) if version else b"",
            _ROLE + varint(role) if role else b"",
            _text(_ARM, arm) if arm else b"",
            _SHADOW + b"\x01" if shadow else b"",
        ]
        encoded = b"".join(parts)
        if len(_routes) >= _CACHED:
            _routes.clear()
        _routes[key] = encoded
    return encoded


def _tensor_head(tag: bytes, name: str, datatype: str, shape: tuple[int, ...], size: int) -> bytes:
    """A tensor field's tag and length, then its name, datatype, shape and its data's tag
    and length: all but the data."""
    key = (tag, name, datatype, shape, size)
    encoded = _tensor_heads.get(key)
    if encoded is None:
        packed = b"".join(varint(dimension) for dimension in shape)
        head = b"".join(
            [
                _text(_TENSOR_NAME, name) if name else b"",
                _text(_TENSOR_DATATYPE, datatype) if datatype else b"",
                _TENSOR_SHAPE + varint(len(packed)) + packed if packed else b"",
                _TENSOR_DATA + varint(size) if size else b"",
            ]
        )
        encoded = tag + varint(len(head) + size) + head
        if len(_tensor_heads) >= _CACHED:
            _tensor_heads.clear()
        _tensor_heads[key] = encoded
    return encoded


def _tensors(tag: bytes, arrays: Mapping[str, np.ndarray]) -> list[bytes]:
    parts = []
    for name, array in arrays.items():
        data = raw_of(array)
        parts.append(_tensor_head(tag, name, datatype_of(array), array.shape, len(data)))
        parts.append(data)
    return parts


def _time(tag: bytes, seconds: float) -> bytes:
    """A Duration or Timestamp field (their wire formats are the same) of `seconds`."""
    whole, nanos = divmod(round(seconds * 1e9), _NANOS)
    body = (_SECONDS + varint(whole) if whole else b"") + (
        _NANOS_FIELD + varint(nanos) if nanos else b""
    )
    return tag + varint(len(body)) + body if body else b""


def encode(
    *,
    request_id: str,
    model: str,
    version: int,
    role: int,
    inputs: Mapping[str, np.ndarray],
    outputs: Mapping[str, np.ndarray],
    latency: float,
    received_at: float,
    trace_id: int = 0,
    span_id: int = 0,
    trace_flags: int = 0,
    arm: str = "",
    shadow: bool = False,
    status_code: int = 0,
    status_message: str = "",
    nan_flagged: bool = False,
    sample_rate: float = 1.0,
    gateway_id: str = "",
) -> bytes:
    """The `PredictionLog` encoding of one prediction, from the request's arrays; `latency`
    in seconds, `received_at` in seconds since the epoch, a zero `trace_id`: not traced."""
    parts = [_text(_REQUEST_ID, request_id) if request_id else b""]
    parts.append(_route(model, version, role, arm, shadow))
    parts += _tensors(_INPUTS, inputs)
    parts += _tensors(_OUTPUTS, outputs)
    if status_code:
        parts.append(_STATUS_CODE + varint(status_code))
    if status_message:
        parts.append(_text(_STATUS_MESSAGE, status_message))
    parts.append(_time(_LATENCY, latency))
    if nan_flagged:
        parts.append(_NAN_FLAGGED + b"\x01")
    if sample_rate:
        parts.append(_SAMPLE_RATE + _DOUBLE.pack(sample_rate))
    trace = format(trace_id, "032x") if trace_id else ""
    if trace:
        parts.append(_TRACE_ID + b"\x20" + trace.encode())
    if gateway_id:
        parts.append(_text(_GATEWAY_ID, gateway_id))
    parts.append(_time(_RECEIVED_AT, received_at))
    if trace:
        parent = f"00-{trace}-{span_id:016x}-{trace_flags:02x}"
        parts.append(_TRACEPARENT + b"\x37" + parent.encode())
    return b"".join(parts)


def model_of(frame: bytes) -> str:
    """The model a log's encoding names: read from where `encode` puts it (after the request
    id), else from the whole message. ValueError when it is no `PredictionLog`."""
    position = 0
    if frame[:1] == _REQUEST_ID and len(frame) > 1 and frame[1] < 0x80:
        position = 2 + frame[1]
    if frame[position : position + 1] == _MODEL and len(frame) > position + 1:
        length = frame[position + 1]
        if length < 0x80 and position + 2 + length <= len(frame):
            return frame[position + 2 : position + 2 + length].decode()
    try:
        return PredictionLog.FromString(frame).model
    except DecodeError as exc:
        raise ValueError(f"a spooled prediction log does not parse: {exc}") from None
