"""Flywheel's Python SDK, for training jobs and apps.

- `register`: a fitted scikit-learn estimator or pipeline, XGBoost or LightGBM model, or
  PyTorch module into the registry: converted to ONNX with its community's converter,
  checked against the original on the reference sample, streamed with its reference
  sample, metrics and lineage.
- `Client`: predictions from the gateway, and ground truth for them.
"""

from flywheel_sdk.checks import Agreement, ConversionMismatch, Tolerances
from flywheel_sdk.client import Client, InferenceFailed, Prediction
from flywheel_sdk.conversion import Converted, Family, Task, UnsupportedModel, to_onnx
from flywheel_sdk.registration import Lineage, Registered, Registry, register, register_async

__all__ = [
    "Agreement",
    "Client",
    "ConversionMismatch",
    "Converted",
    "Family",
    "InferenceFailed",
    "Lineage",
    "Prediction",
    "Registered",
    "Registry",
    "Task",
    "Tolerances",
    "UnsupportedModel",
    "register",
    "register_async",
    "to_onnx",
]
