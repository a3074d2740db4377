"""Reading logged predictions and ground truth: input rows, predicted classes, labels.

The drift detector and the retrain trigger read the same events; one reading of them keeps
a predicted class and its ground truth comparable everywhere.
"""

from __future__ import annotations

import numpy as np

from flywheel.common.v1.types_pb2 import Tensor
from flywheel.drift.v1.ground_truth_pb2 import GroundTruth
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.signatures import NUMPY_DTYPES

LABEL_OUTPUT = "label"


def category_label(value: object) -> str:
    """The text of a category, predicted class or label: integers without a decimal point,
    so that 1, 1.0 and "1" from a model, a reference sample and ground truth all match."""
    if isinstance(value, str):
        return value
    number = float(value)  # type: ignore[arg-type]
    return str(int(number)) if number.is_integer() else repr(number)


def tensor_array(tensor: Tensor) -> np.ndarray:
    """A numeric tensor's values in its own shape; ValueError for BYTES or unknown types."""
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
    array = tensor_array(tensors[0]).astype(np.float64)
    if array.ndim == 1:
        return array.reshape(1, -1)
    return array.reshape(array.shape[0], -1)


def first_label(log: PredictionLog) -> str:
    """The predicted class of the first row: the `label` output, else the first output."""
    outputs = [t for t in log.outputs if t.name == LABEL_OUTPUT] or list(log.outputs)
    if not outputs:
        return ""
    try:
        values = tensor_array(outputs[0]).reshape(-1)
    except ValueError:
        return ""
    if not len(values):
        return ""
    return category_label(values[0])


def ground_truth_label(truth: GroundTruth) -> str | None:
    """The label as category text, or None when the event carries none."""
    kind = truth.WhichOneof("label")
    return None if kind is None else category_label(getattr(truth, kind))
