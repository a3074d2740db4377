"""scikit-learn classifiers as ONNX with the names Flywheel's contracts use.

skl2onnx is imported on first use: only training code needs it, never a service.
"""

from __future__ import annotations

from typing import Any


def onnx_from_sklearn(estimator: Any, n_features: int) -> bytes:
    """ONNX bytes of a fitted classifier: input `features`, outputs `label`, `probabilities`."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    model = to_onnx(
        estimator,
        initial_types=[("features", FloatTensorType([None, n_features]))],
        options={id(estimator): {"zipmap": False}},
        final_types=None,
        target_opset=17,
    )
    outputs = {"output_label": "label", "output_probability": "probabilities"}
    for node in model.graph.node:
        node.output[:] = [outputs.get(name, name) for name in node.output]
    for value in model.graph.output:
        value.name = outputs.get(value.name, value.name)
    return bytes(model.SerializeToString())
