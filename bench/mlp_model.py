"""The gateway benchmark's model: an MLP on scikit-learn's breast-cancer data, as ONNX.

bench/gateway.py runs this file as its own process to convert the model: flywheel_sdk
imports Flywheel's `inference` protobufs, whose names tritonclient registers too, so the
two cannot share a process. Usage: `python bench/mlp_model.py > model.onnx`.
"""

from __future__ import annotations

import sys

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler


def features() -> np.ndarray:
    """The 30 features of every row, standardized, as float32."""
    rows = load_breast_cancer(return_X_y=True)[0]
    scaled: np.ndarray = StandardScaler().fit_transform(rows).astype(np.float32)
    return scaled


def onnx_model() -> bytes:
    from flywheel_sdk import to_onnx  # not at the top: gateway.py imports features()

    labels = load_breast_cancer(return_X_y=True)[1]
    model = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=300, random_state=0)
    rows = features()
    return to_onnx(model.fit(rows, labels), rows.shape[1]).onnx


if __name__ == "__main__":
    sys.stdout.buffer.write(onnx_model())
