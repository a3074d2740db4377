"""Prediction logs as the serving process spools them: one compact frame per log, packed
with `struct` on the request path, and made into the `PredictionLog` that
`flywheel.predictions` carries by the process that ships them.

Why not the message itself: building a `PredictionLog` costs the event loop 40-45 us per
log in the serving process (`bench/prediction_logs.py`), three times what the same call
takes in a tight loop; packing the same fields into a frame costs a fraction of that, and
the message is then built in another process, off the serving loop.

A frame, little-endian: a head (`_HEAD`: the format, the numbers, the lengths of the texts,
the counts of tensors), the texts (request id, model, arm, status message, gateway id),
then each tensor: its head (`_TENSOR`), name, datatype, shape (int64 each), raw data.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

import numpy as np

from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_gateway.tensors import datatype_of, raw_of

FORMAT = 1

_HEAD = struct.Struct("<BqiBBdddQQQBIIIIIHH")
"""format, version, status code, role, flags, latency, received at, sample rate, trace id
(high, low), span id, trace flags; lengths of request id, model, arm, status message,
gateway id; inputs, outputs."""
_TENSOR = struct.Struct("<IHBI")
"""Lengths of the name and datatype, dimensions, length of the data."""
_SHADOW, _NAN_FLAGGED, _TRACED = 1, 2, 4
_NANOS = 1_000_000_000
_U64 = (1 << 64) - 1
_MODEL_AT = _HEAD.size


class Span(NamedTuple):
    """The request's span, as its log carries it (all zero: not traced)."""

    trace_id: int = 0
    span_id: int = 0
    flags: int = 0


UNTRACED = Span()

_Tensor = tuple[bytes, bytes, tuple[int, ...], bytes]
"""Name, datatype, shape and raw data, as a frame holds them."""


def encode(
    *,
    request_id: str,
    model: str,
    version: int,
    role: int,
    inputs: dict[str, np.ndarray],
    outputs: dict[str, np.ndarray],
    latency: float,
    received_at: float,
    span: Span = UNTRACED,
    arm: str = "",
    shadow: bool = False,
    status_code: int = 0,
    status_message: str = "",
    nan_flagged: bool = False,
    sample_rate: float = 1.0,
    gateway_id: str = "",
) -> bytes:
    """The frame of one prediction's log, from the request's arrays; `latency` in seconds,
    `received_at` in seconds since the epoch."""
    flags = (_SHADOW if shadow else 0) | (_NAN_FLAGGED if nan_flagged else 0)
    tensors = [
        (name.encode(), datatype_of(array).encode(), array.shape, raw_of(array))
        for group in (inputs, outputs)
        for name, array in group.items()
    ]
    return _pack(
        (version, status_code, role, flags, latency, received_at, sample_rate),
        span,
        (request_id, model, arm, status_message, gateway_id),
        len(inputs),
        tensors,
    )


def encode_message(log: PredictionLog) -> bytes:
    """The frame of a log given as a message (what a tool or a test holds)."""
    parent = log.traceparent
    span = (
        Span(int(parent[3:35], 16), int(parent[36:52], 16), int(parent[53:55], 16))
        if len(parent) == 55
        else UNTRACED
    )
    flags = (_SHADOW if log.shadow else 0) | (_NAN_FLAGGED if log.nan_flagged else 0)
    numbers = (
        log.version,
        log.status_code,
        log.role,
        flags,
        log.latency.seconds + log.latency.nanos / _NANOS,
        log.received_at.seconds + log.received_at.nanos / _NANOS,
        log.sample_rate,
    )
    texts = (log.request_id, log.model, log.arm, log.status_message, log.gateway_id)
    tensors = [
        (tensor.name.encode(), tensor.datatype.encode(), tuple(tensor.shape), tensor.data)
        for tensor in [*log.inputs, *log.outputs]
    ]
    return _pack(numbers, span, texts, len(log.inputs), tensors)


def _pack(
    numbers: tuple[int, int, int, int, float, float, float],
    span: Span,
    texts: tuple[str, str, str, str, str],
    input_count: int,
    tensors: list[_Tensor],
) -> bytes:
    encoded = [text.encode() for text in texts]
    version, status_code, role, flags, latency, received_at, sample_rate = numbers
    if span.trace_id:
        flags |= _TRACED
    parts = [
        _HEAD.pack(
            FORMAT,
            version,
            status_code,
            role,
            flags,
            latency,
            received_at,
            sample_rate,
            span.trace_id >> 64,
            span.trace_id & _U64,
            span.span_id,
            span.flags,
            *map(len, encoded),
            input_count,
            len(tensors) - input_count,
        ),
        *encoded,
    ]
    for name, datatype, shape, data in tensors:
        parts += [
            _TENSOR.pack(len(name), len(datatype), len(shape), len(data)),
            name,
            datatype,
            struct.pack(f"<{len(shape)}q", *shape),
            data,
        ]
    return b"".join(parts)


def model_of(frame: bytes) -> str:
    """The model a frame's log belongs to, read without decoding the rest."""
    _check_format(frame)
    request_id_length, model_length = _HEAD.unpack_from(frame)[12:14]
    start = _MODEL_AT + request_id_length
    return frame[start : start + model_length].decode()


def _check_format(frame: bytes) -> None:
    if len(frame) < _HEAD.size:
        raise ValueError(f"a prediction log frame of {len(frame)} bytes is cut short")
    if frame[0] != FORMAT:
        raise ValueError(f"prediction log frame of format {frame[0]}; this gateway reads {FORMAT}")


def decode(frame: bytes) -> dict[str, Any]:
    """A frame as the fields of its `PredictionLog` (what its constructor takes); ValueError
    when it is not a whole frame of this format."""
    _check_format(frame)
    (
        _,
        version,
        status_code,
        role,
        flags,
        latency,
        received_at,
        sample_rate,
        trace_high,
        trace_low,
        span_id,
        trace_flags,
        *lengths,
        input_count,
        output_count,
    ) = _HEAD.unpack_from(frame)
    offset = _HEAD.size
    texts = []
    for length in lengths:
        texts.append(frame[offset : offset + length].decode())
        offset += length
    tensors = []
    try:
        for _ in range(input_count + output_count):
            name_length, datatype_length, dimensions, data_length = _TENSOR.unpack_from(
                frame, offset
            )
            offset += _TENSOR.size
            name = frame[offset : offset + name_length].decode()
            offset += name_length
            datatype = frame[offset : offset + datatype_length].decode()
            offset += datatype_length
            shape = struct.unpack_from(f"<{dimensions}q", frame, offset)
            offset += 8 * dimensions
            data = frame[offset : offset + data_length]
            offset += data_length
            tensors.append({"name": name, "datatype": datatype, "shape": shape, "data": data})
    except struct.error:
        raise ValueError("a prediction log frame is cut short") from None
    if offset != len(frame):
        raise ValueError(f"a prediction log frame of {len(frame)} bytes holds {offset}")
    request_id, model, arm, status_message, gateway_id = texts
    trace_id = (trace_high << 64) | trace_low
    traced = bool(flags & _TRACED)
    return {
        "request_id": request_id,
        "model": model,
        "version": version,
        "role": role,
        "arm": arm,
        "shadow": bool(flags & _SHADOW),
        "inputs": tensors[:input_count],
        "outputs": tensors[input_count:],
        "status_code": status_code,
        "status_message": status_message,
        "latency": _seconds_nanos(latency),
        "nan_flagged": bool(flags & _NAN_FLAGGED),
        "sample_rate": sample_rate,
        "trace_id": format(trace_id, "032x") if traced else "",
        "traceparent": f"00-{trace_id:032x}-{span_id:016x}-{trace_flags:02x}" if traced else "",
        "gateway_id": gateway_id,
        "received_at": _seconds_nanos(received_at),
    }


def _seconds_nanos(seconds: float) -> dict[str, int]:
    whole, nanos = divmod(round(seconds * 1e9), _NANOS)
    return {"seconds": whole, "nanos": nanos}


def to_message(frame: bytes) -> PredictionLog:
    """The `PredictionLog` a frame holds; ValueError when it is not a whole frame."""
    return PredictionLog(**decode(frame))
