"""Flywheel's Python SDK, for training jobs and apps.

- `register`: a fitted scikit-learn estimator or pipeline, XGBoost or LightGBM model, or
  PyTorch module into the registry: converted to ONNX with its community's converter,
  checked against the original on the reference sample, streamed with its reference
  sample, metrics and lineage.
- `Client`: predictions from the gateway, and ground truth for them. Imported on first use:
  it brings the KServe V2 protobufs, whose names tritonclient registers too, so a process
  that only registers models (and may use tritonclient) never loads them.
"""

from typing import Any

from flywheel_sdk.checks import Agreement, ConversionMismatch, Tolerances
from flywheel_sdk.conversion import Converted, Family, Task, UnsupportedModel, to_onnx
from flywheel_sdk.registration import Lineage, Registered, Registry, register, register_async

_CLIENT_NAMES = ("Client", "InferenceFailed", "Prediction")


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        from flywheel_sdk import client

        return getattr(client, name)
    raise AttributeError(f"module 'flywheel_sdk' has no attribute {name!r}")


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
