"""A converted model checked against the original on the reference sample, before anything
is uploaded: the ONNX model must give the original's answers.

Classifiers: the same label on at least `min_label_agreement` of the rows, and every class
probability within `probability_tolerance`. Regressors: every prediction within
`value_tolerance` (relative to the value's magnitude, at least 1). Conversions compute in
float32 where the original may use float64, so a row on a decision boundary may flip: the
tolerances say how much of that is accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import onnxruntime

from flywheel_sdk.conversion import (
    FEATURES,
    LABEL,
    PREDICTION,
    PROBABILITIES,
    Converted,
    Family,
    Task,
)


@dataclass(frozen=True)
class Tolerances:
    min_label_agreement: float = 0.999
    probability_tolerance: float = 1e-4
    value_tolerance: float = 1e-4


@dataclass(frozen=True)
class Agreement:
    """How closely the ONNX model followed the original over the reference rows."""

    rows: int
    label_agreement: float | None
    """Share of rows with the original's label (classifiers)."""
    max_difference: float
    """Largest difference of a probability (classifiers) or a prediction (regressors)."""


class ConversionMismatch(ValueError):
    """The converted model does not answer as the original: nothing was registered."""


def check(
    converted: Converted, model: Any, reference: np.ndarray, tolerances: Tolerances
) -> Agreement:
    """The agreement of `converted` with `model` on `reference`; ConversionMismatch saying
    where it fails."""
    rows = np.ascontiguousarray(reference, dtype=np.float32)
    session = onnxruntime.InferenceSession(converted.onnx, providers=["CPUExecutionProvider"])
    if converted.task is Task.CLASSIFICATION:
        label, probabilities = session.run([LABEL, PROBABILITIES], {FEATURES: rows})
        expected_label, expected_probabilities = _original_classes(converted.family, model, rows)
        agreement = float(np.mean(np.asarray(label).reshape(-1) == expected_label.reshape(-1)))
        difference = float(np.max(np.abs(probabilities - expected_probabilities), initial=0.0))
        if agreement < tolerances.min_label_agreement:
            raise ConversionMismatch(
                f"the ONNX model gives the original's label on {agreement:.2%} of the "
                f"{len(rows)} reference rows; at least {tolerances.min_label_agreement:.2%} "
                "is required"
            )
        if difference > tolerances.probability_tolerance:
            raise ConversionMismatch(
                f"a class probability of the ONNX model differs from the original's by "
                f"{difference:.3g} on the reference rows; at most "
                f"{tolerances.probability_tolerance:g} is allowed"
            )
        return Agreement(len(rows), agreement, difference)
    [prediction] = session.run([PREDICTION], {FEATURES: rows})
    expected = _original_values(converted.family, model, rows)
    prediction = np.asarray(prediction, dtype=np.float64).reshape(-1)
    relative = np.abs(prediction - expected) / np.maximum(np.abs(expected), 1.0)
    difference = float(np.max(relative, initial=0.0))
    if difference > tolerances.value_tolerance:
        worst = int(np.argmax(relative))
        raise ConversionMismatch(
            f"the ONNX model predicts {prediction[worst]:.6g} where the original predicts "
            f"{expected[worst]:.6g} (reference row {worst}); at most a relative "
            f"{tolerances.value_tolerance:g} is allowed"
        )
    return Agreement(len(rows), None, difference)


def _original_classes(
    family: Family, model: Any, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    if family is Family.PYTORCH:
        logits = _torch_outputs(model, rows)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return np.argmax(logits, axis=1), shifted / shifted.sum(axis=1, keepdims=True)
    probabilities = np.asarray(model.predict_proba(rows), dtype=np.float64)
    return np.asarray(model.predict(rows)), probabilities


def _original_values(family: Family, model: Any, rows: np.ndarray) -> np.ndarray:
    if family is Family.PYTORCH:
        return _torch_outputs(model, rows).reshape(-1)
    return np.asarray(model.predict(rows), dtype=np.float64).reshape(-1)


def _torch_outputs(module: Any, rows: np.ndarray) -> np.ndarray:
    import torch

    module.eval()
    with torch.no_grad():
        return np.asarray(module(torch.from_numpy(rows)).numpy(), dtype=np.float64)
