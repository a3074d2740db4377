"""A model version's predictions on the holdout, from its ONNX artifact on CPU."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnxruntime

from flywheel_common.prediction_logs import LABEL_OUTPUT, category_label
from flywheel_common.signatures import NUMPY_DTYPES

_ONNX_TYPES = {"tensor(float)": "FP32", "tensor(double)": "FP64"}


def predict(artifact: Path, features: np.ndarray) -> list[str]:
    """Predicted class (the `label` output, else the first) of each row, as category text.

    The gate runs on CPU: it is a one-off comparison, and a GPU belongs to serving.
    """
    session = onnxruntime.InferenceSession(str(artifact), providers=["CPUExecutionProvider"])
    [first_input, *others] = session.get_inputs()
    if others:
        raise ValueError(f"the gate scores models with one input, this one has {1 + len(others)}")
    dtype = NUMPY_DTYPES[_ONNX_TYPES.get(first_input.type, "FP32")]
    outputs = [o.name for o in session.get_outputs()]
    output = LABEL_OUTPUT if LABEL_OUTPUT in outputs else outputs[0]
    [values] = session.run([output], {first_input.name: features.astype(dtype)})
    return [category_label(value) for value in np.asarray(values).reshape(len(features), -1)[:, 0]]


async def predict_off_loop(artifact: Path, features: np.ndarray) -> list[str]:
    return await asyncio.to_thread(predict, artifact, features)
