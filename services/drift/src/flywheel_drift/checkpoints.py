"""The detector's checkpoint format: a versioned JSON document with its arrays beside it.

Open windows, change detectors and the label join are checkpointed every batch, so the
format is compact and fast (numeric columns as raw little-endian arrays, not lists of
numbers) and needs no code to read but this module: no pickle, whose bytes name Python
classes and run code when loaded. A checkpoint starts with the magic `FWCK`, a format
version byte and the length of its JSON header; the header's `arrays` describe the buffers
that follow it, and the document refers to them as {"$array": index}.
"""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

MAGIC = b"FWCK"
FORMAT_VERSION = 1
_PREFIX = struct.Struct("<4sBI")


class UnreadableCheckpoint(ValueError):
    """Bytes that are not a checkpoint of a format this version reads."""


def encode(document: dict[str, Any]) -> bytes:
    """`document`: JSON values, with numpy arrays anywhere a value may be."""
    arrays: list[np.ndarray] = []

    def lift(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            arrays.append(np.ascontiguousarray(value))
            return {"$array": len(arrays) - 1}
        if isinstance(value, dict):
            return {key: lift(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [lift(item) for item in value]
        return value

    body = lift(document)
    header = json.dumps(
        {
            "document": body,
            "arrays": [{"dtype": a.dtype.newbyteorder("<").str, "shape": a.shape} for a in arrays],
        },
        separators=(",", ":"),
    ).encode()
    buffers = [a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes() for a in arrays]
    return b"".join([_PREFIX.pack(MAGIC, FORMAT_VERSION, len(header)), header, *buffers])


def decode(data: bytes) -> dict[str, Any]:
    if len(data) < _PREFIX.size:
        raise UnreadableCheckpoint("too short to be a checkpoint")
    magic, version, header_length = _PREFIX.unpack_from(data)
    if magic != MAGIC:
        raise UnreadableCheckpoint("not a drift checkpoint (no FWCK magic)")
    if version != FORMAT_VERSION:
        raise UnreadableCheckpoint(f"checkpoint format {version}; this version reads 1")
    start = _PREFIX.size
    header = json.loads(data[start : start + header_length])
    position = start + header_length
    arrays: list[np.ndarray] = []
    for spec in header["arrays"]:
        dtype = np.dtype(spec["dtype"])
        shape = tuple(spec["shape"])
        size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        arrays.append(
            np.frombuffer(data, dtype, offset=position, count=size // dtype.itemsize)
            .reshape(shape)
            .astype(dtype.newbyteorder("="), copy=True)
        )
        position += size

    def lower(value: Any) -> Any:
        if isinstance(value, dict):
            if value.keys() == {"$array"}:
                return arrays[value["$array"]]
            return {key: lower(item) for key, item in value.items()}
        if isinstance(value, list):
            return [lower(item) for item in value]
        return value

    document: dict[str, Any] = lower(header["document"])
    return document
