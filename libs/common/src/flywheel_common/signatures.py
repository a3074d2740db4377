"""Model signatures in the KServe V2 vocabulary: tensor names, datatypes and shapes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DYNAMIC = -1
"""A dimension whose size varies from request to request (the batch, usually)."""

# Datatypes of the KServe V2 protocol, with their size in bytes where fixed.
DATATYPE_SIZES: dict[str, int | None] = {
    "BOOL": 1,
    "UINT8": 1,
    "UINT16": 2,
    "UINT32": 4,
    "UINT64": 8,
    "INT8": 1,
    "INT16": 2,
    "INT32": 4,
    "INT64": 8,
    "FP16": 2,
    "FP32": 4,
    "FP64": 8,
    "BF16": 2,
    "BYTES": None,
}

# onnxruntime's type strings for the same datatypes.
# The numpy dtype of each V2 datatype, little-endian as the raw wire format is.
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
    "BYTES": np.dtype(np.object_),
}

ONNXRUNTIME_DATATYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(bfloat16)": "BF16",
    "tensor(string)": "BYTES",
}


@dataclass(frozen=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]
    """Dimensions; -1 where the size is dynamic."""

    def describe(self) -> str:
        dims = ", ".join("?" if d == DYNAMIC else str(d) for d in self.shape)
        return f"{self.name}: {self.datatype}[{dims}]"


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": [[t.name, t.datatype, list(t.shape)] for t in self.inputs],
            "outputs": [[t.name, t.datatype, list(t.shape)] for t in self.outputs],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Signature:
        def specs(rows: list[list[Any]]) -> tuple[TensorSpec, ...]:
            return tuple(TensorSpec(name, datatype, tuple(shape)) for name, datatype, shape in rows)

        return cls(specs(data["inputs"]), specs(data["outputs"]))


def session_signature(session: Any) -> Signature:
    """The signature of a loaded onnxruntime InferenceSession (its inputs and outputs)."""

    def spec(value: Any) -> TensorSpec:
        datatype = ONNXRUNTIME_DATATYPES.get(value.type, value.type)
        shape = tuple(d if isinstance(d, int) and d >= 0 else DYNAMIC for d in value.shape)
        return TensorSpec(value.name, datatype, shape)

    return Signature(
        tuple(spec(v) for v in session.get_inputs()), tuple(spec(v) for v in session.get_outputs())
    )
