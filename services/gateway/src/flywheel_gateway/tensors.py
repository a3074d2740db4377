"""Tensors of the V2 protocol as numpy arrays: decoding, checking against a signature, encoding."""

from __future__ import annotations

import functools
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from flywheel_common.errors import InvalidArgument
from flywheel_common.signatures import DYNAMIC, NUMPY_DTYPES, Signature, TensorSpec

MAX_RANK = 32
"""Dimensions a tensor may have: numpy 1's limit, far past any model's input."""
MAX_ELEMENTS = 2**31
"""Elements a shape may describe, counting only its non-zero dims: more than a gRPC message
carries, yet small enough that numpy can describe even an empty array of that shape."""

DATATYPE_OF_KIND = {
    dtype.str if name != "BOOL" else "|b1": name for name, dtype in NUMPY_DTYPES.items()
}


_TEXT_KINDS = ("O", "U", "S")
"""numpy kinds sent as the protocol's BYTES: objects, unicode and byte strings."""
_LITTLE_ENDIAN = {"<", "|"} | ({"="} if sys.byteorder == "little" else set())
"""The byte orders numpy writes as the protocol's little-endian raw contents."""


class NonFinitePolicy(StrEnum):
    REJECT = "reject"
    FLAG = "flag"


@dataclass(frozen=True)
class RequestTensor:
    """An input as it arrived: raw bytes or typed values, before any checking."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes | None = None
    values: Sequence[object] | None = None


def _element_count(shape: tuple[int, ...]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


def _decode_bytes(data: bytes, count: int, name: str) -> np.ndarray:
    items = bytes_elements(data, name)
    if len(items) != count:
        raise InvalidArgument(f"input {name!r}: expected {count} BYTES elements, got {len(items)}")
    array = np.empty(count, dtype=np.object_)
    array[:] = items
    return array


def bytes_elements(data: bytes, name: str) -> list[bytes]:
    """BYTES raw layout: each element is a 4-byte little-endian length, then its bytes."""
    items: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise InvalidArgument(f"input {name!r}: BYTES element header cut short at {offset}")
        (length,) = struct.unpack_from("<I", data, offset)
        offset += 4
        if offset + length > len(data):
            raise InvalidArgument(f"input {name!r}: BYTES element longer than the data left")
        items.append(data[offset : offset + length])
        offset += length
    return items


def encode_bytes(array: np.ndarray) -> bytes:
    parts = []
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode()
        parts.append(struct.pack("<I", len(data)) + data)
    return b"".join(parts)


def to_array(tensor: RequestTensor) -> np.ndarray:
    """The tensor's values as an array of its shape; the byte length must match exactly."""
    if tensor.datatype not in NUMPY_DTYPES:
        raise InvalidArgument(
            f"input {tensor.name!r}: datatype {tensor.datatype!r} is not supported; use one of "
            + ", ".join(NUMPY_DTYPES)
        )
    _check_shape(tensor)
    count = _element_count(tensor.shape)
    dtype = NUMPY_DTYPES[tensor.datatype]
    if tensor.raw is not None:
        if tensor.datatype == "BYTES":
            return _decode_bytes(tensor.raw, count, tensor.name).reshape(tensor.shape)
        expected = count * dtype.itemsize
        if len(tensor.raw) != expected:
            raise InvalidArgument(
                f"input {tensor.name!r}: shape {list(tensor.shape)} of {tensor.datatype} needs "
                f"{expected} bytes, received {len(tensor.raw)}"
            )
        return np.frombuffer(tensor.raw, dtype=dtype).reshape(tensor.shape)
    values = list(tensor.values or ())
    if len(values) != count:
        raise InvalidArgument(
            f"input {tensor.name!r}: shape {list(tensor.shape)} needs {count} values, "
            f"received {len(values)}"
        )
    try:
        array = np.asarray(values, dtype=dtype)
    except (OverflowError, ValueError, TypeError) as exc:
        raise InvalidArgument(
            f"input {tensor.name!r}: its values do not fit {tensor.datatype} ({exc})"
        ) from None
    return array.reshape(tensor.shape)


def _check_shape(tensor: RequestTensor) -> None:
    shape = list(tensor.shape)
    if len(shape) > MAX_RANK:
        raise InvalidArgument(
            f"input {tensor.name!r}: shape has {len(shape)} dims; at most {MAX_RANK} are allowed"
        )
    if any(dim < 0 for dim in shape):
        raise InvalidArgument(f"input {tensor.name!r}: shape {shape} has a negative dim")
    if _element_count(tuple(dim for dim in shape if dim)) > MAX_ELEMENTS:
        raise InvalidArgument(
            f"input {tensor.name!r}: shape {shape} describes more than {MAX_ELEMENTS} elements"
        )


def check_against(
    arrays: dict[str, np.ndarray],
    datatypes: dict[str, str],
    signature: Signature,
    max_batch: int,
    non_finite: NonFinitePolicy,
) -> bool:
    """Check named inputs against the model's signature; returns True if NaN/Inf was flagged."""
    expected = {spec.name: spec for spec in signature.inputs}
    missing = sorted(set(expected) - set(arrays))
    if missing:
        raise InvalidArgument(
            f"missing input(s) {', '.join(missing)}; the model takes "
            + ", ".join(spec.describe() for spec in signature.inputs)
        )
    unknown = sorted(set(arrays) - set(expected))
    if unknown:
        raise InvalidArgument(
            f"unknown input(s) {', '.join(unknown)}; the model takes "
            + ", ".join(spec.describe() for spec in signature.inputs)
        )
    flagged = False
    for name, array in arrays.items():
        spec = expected[name]
        _check_one(spec, datatypes[name], array)
        if spec.shape and spec.shape[0] == DYNAMIC and array.shape[0] > max_batch:
            raise InvalidArgument(
                f"input {name!r}: batch of {array.shape[0]} exceeds the maximum of {max_batch}"
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            if non_finite is NonFinitePolicy.REJECT:
                raise InvalidArgument(f"input {name!r} contains NaN or Inf; send finite values")
            flagged = True
    return flagged


def _check_one(spec: TensorSpec, datatype: str, array: np.ndarray) -> None:
    if datatype != spec.datatype:
        raise InvalidArgument(
            f"input {spec.name!r}: expected datatype {spec.datatype}, received {datatype}"
        )
    received = tuple(array.shape)
    if len(received) != len(spec.shape) or any(
        want not in (DYNAMIC, got) for want, got in zip(spec.shape, received, strict=True)
    ):
        raise InvalidArgument(
            f"input {spec.name!r}: expected shape {_shape_text(spec.shape)}, "
            f"received {list(received)}"
        )


def _shape_text(shape: tuple[int, ...]) -> str:
    return "[" + ", ".join("-1" if dim == DYNAMIC else str(dim) for dim in shape) + "]"


def datatype_of(array: np.ndarray) -> str:
    return _datatype_of_dtype(array.dtype)


@functools.cache
def _datatype_of_dtype(dtype: np.dtype) -> str:
    # Cached: every answer and every prediction log asks, and a model has few dtypes.
    if dtype.kind in _TEXT_KINDS:
        return "BYTES"
    if dtype == np.bool_:
        return "BOOL"
    return DATATYPE_OF_KIND[dtype.newbyteorder("<").str]


def raw_of(array: np.ndarray) -> bytes:
    """The tensor's raw contents: little-endian, row-major."""
    if array.dtype.byteorder in _LITTLE_ENDIAN and array.dtype.kind not in _TEXT_KINDS:
        return array.tobytes()  # row-major whatever the array's layout
    if datatype_of(array) == "BYTES":
        return encode_bytes(array)
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
