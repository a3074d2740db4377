"""Each model family converted to Flywheel's ONNX contract and checked against the original,
on data that ships with scikit-learn."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import lightgbm
import numpy as np
import onnxruntime
import pytest
import torch
import xgboost
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from flywheel_common.signatures import Signature, TensorSpec, session_signature
from flywheel_sdk import ConversionMismatch, Family, Task, Tolerances, UnsupportedModel, to_onnx
from flywheel_sdk.checks import check


def iris() -> tuple[np.ndarray, np.ndarray]:
    data = load_iris()
    return data.data.astype(np.float32), data.target


def torch_classifier(x: np.ndarray, y: np.ndarray) -> torch.nn.Module:
    torch.manual_seed(0)
    module = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 16), torch.nn.ReLU(), torch.nn.Linear(16, 3)
    )
    optimiser = torch.optim.Adam(module.parameters(), lr=0.05)
    features, labels = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    for _ in range(200):
        optimiser.zero_grad()
        loss = torch.nn.functional.cross_entropy(module(features), labels)
        loss.backward()
        optimiser.step()
    return module


CLASSIFIERS: dict[str, Callable[[np.ndarray, np.ndarray], Any]] = {
    "scikit-learn": lambda x, y: make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=500)
    ).fit(x, y),
    "xgboost": lambda x, y: xgboost.XGBClassifier(n_estimators=20, max_depth=3).fit(x, y),
    "lightgbm": lambda x, y: lightgbm.LGBMClassifier(n_estimators=20, verbose=-1).fit(x, y),
    "pytorch": torch_classifier,
}
"""A classifier of each family, trained by the test that uses it (not at collection)."""


@pytest.mark.parametrize("family", CLASSIFIERS)
def test_every_family_converts_to_the_contract_and_answers_as_the_original(family: str) -> None:
    x, y = iris()
    model = CLASSIFIERS[family](x, y)
    task = "classification" if family == "pytorch" else None
    converted = to_onnx(model, n_features=4, task=task)
    assert converted.family is Family(family)
    assert converted.task is Task.CLASSIFICATION
    session = onnxruntime.InferenceSession(converted.onnx, providers=["CPUExecutionProvider"])
    signature = session_signature(session)
    assert [(s.name, s.datatype, s.shape) for s in signature.inputs] == [
        ("features", "FP32", (-1, 4))
    ]
    assert [(s.name, s.datatype) for s in signature.outputs] == [
        ("label", "INT64"),
        ("probabilities", "FP32"),
    ]
    agreement = check(converted, model, x, Tolerances())
    assert agreement.rows == 150
    assert agreement.label_agreement is not None
    assert agreement.label_agreement >= 0.999
    assert agreement.max_difference <= 1e-4
    _, probabilities = session.run(None, {"features": x[:5]})
    assert probabilities.shape == (5, 3)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_regressors_answer_a_prediction() -> None:
    data = load_diabetes()
    x, y = data.data.astype(np.float32), data.target
    for model in (
        RandomForestRegressor(n_estimators=10, random_state=0).fit(x, y),
        xgboost.XGBRegressor(n_estimators=20).fit(x, y),
        lightgbm.LGBMRegressor(n_estimators=20, verbose=-1).fit(x, y),
    ):
        converted = to_onnx(model, n_features=x.shape[1])
        assert converted.task is Task.REGRESSION
        agreement = check(converted, model, x, Tolerances())
        assert agreement.label_agreement is None
        assert agreement.max_difference <= 1e-4


def test_a_model_that_answers_otherwise_is_refused_before_any_upload() -> None:
    x, y = iris()
    converted = to_onnx(LogisticRegression(max_iter=500).fit(x, y), n_features=4)
    other = LogisticRegression(max_iter=500).fit(x, (y + 1) % 3)
    with pytest.raises(ConversionMismatch, match="gives the original's label on"):
        check(converted, other, x, Tolerances())


def test_what_cannot_be_converted_says_what_can() -> None:
    with pytest.raises(UnsupportedModel, match="register a fitted scikit-learn estimator"):
        to_onnx(object(), n_features=4)
    with pytest.raises(UnsupportedModel, match="pass task='classification'"):
        to_onnx(torch.nn.Linear(4, 3), n_features=4)


def test_a_breast_cancer_pipeline_keeps_its_probabilities_to_float32_precision() -> None:
    data = load_breast_cancer()
    x, y = data.data.astype(np.float32), data.target
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)
    converted = to_onnx(pipeline, n_features=30)
    agreement = check(converted, pipeline, x[:500], Tolerances())
    assert agreement.max_difference < 1e-5
    expected = Signature(
        (TensorSpec("features", "FP32", (-1, 30)),),
        (TensorSpec("label", "INT64", (-1,)), TensorSpec("probabilities", "FP32", (-1, 2))),
    )
    session = onnxruntime.InferenceSession(converted.onnx, providers=["CPUExecutionProvider"])
    assert session_signature(session) == expected


def test_a_training_job_can_register_beside_tritonclient_in_one_process() -> None:
    """Registering never loads the KServe V2 protobufs, whose names tritonclient registers
    too (the client, which needs them, is imported on first use)."""
    code = (
        "import flywheel_sdk\n"
        "from flywheel_sdk import register, to_onnx\n"
        "import tritonclient.grpc\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
