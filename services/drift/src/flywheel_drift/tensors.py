"""What the detector reads from a PredictionLog: the input rows and the predicted label."""

from __future__ import annotations

import numpy as np

from flywheel.common.v1.types_pb2 import Tensor
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.signatures import NUMPY_DTYPES
from flywheel_drift.profiles import category_label

LABEL_OUTPUT = "label"


def _array(tensor: Tensor) -> np.ndarray:
    dtype = NUMPY_DTYPES.get(tensor.datatype)
    if dtype is None or tensor.datatype == "BYTES":
        raise ValueError(f"tensor {tensor.name!r}: {tensor.datatype} is not a numeric datatype")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(tuple(tensor.shape))


def input_rows(log: PredictionLog, input_name: str = "") -> np.ndarray:
    """The request's feature rows as float64 [rows, features] (the named input, else the
    first); an empty [0, 0] array when the log carries no numeric input."""
    tensors = [t for t in log.inputs if not input_name or t.name == input_name]
    if not tensors:
        return np.empty((0, 0))
    array = _array(tensors[0]).astype(np.float64)
    if array.ndim == 1:
        return array.reshape(1, -1)
    return array.reshape(array.shape[0], -1)


def first_label(log: PredictionLog) -> str:
    """The predicted class of the first row: the `label` output, else the first output."""
    outputs = [t for t in log.outputs if t.name == LABEL_OUTPUT] or list(log.outputs)
    if not outputs:
        return ""
    try:
        values = _array(outputs[0]).reshape(-1)
    except ValueError:
        return ""
    if not len(values):
        return ""
    return category_label(values[0])
