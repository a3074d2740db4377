"""Real ONNX models trained here on scikit-learn's bundled data: nothing is downloaded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from flywheel_sdk import to_onnx


@dataclass(frozen=True)
class IrisModels:
    features: Any
    """float32 [150, 4] inputs."""
    labels: Any
    classifier: bytes
    """LogisticRegression; input `features` FP32[?, 4], outputs `label` and `probabilities`."""
    retrained: bytes
    """A differently regularised classifier with the same signature."""
    three_features: bytes
    """Trained on 3 of the 4 columns: incompatible with `classifier`."""

    @property
    def reference_sample(self) -> bytes:
        return bytes(self.features.tobytes())


def train_iris_models() -> IrisModels:
    features, labels = load_iris(return_X_y=True)
    features = features.astype(np.float32)
    return IrisModels(
        features=features,
        labels=labels,
        classifier=to_onnx(LogisticRegression(max_iter=500).fit(features, labels), 4).onnx,
        retrained=to_onnx(LogisticRegression(C=0.1, max_iter=500).fit(features, labels), 4).onnx,
        three_features=to_onnx(
            LogisticRegression(max_iter=500).fit(features[:, :3], labels), 3
        ).onnx,
    )
