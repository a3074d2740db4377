"""Trained models as ONNX with the converters their communities maintain: skl2onnx for
scikit-learn estimators and pipelines, onnxmltools for XGBoost and LightGBM, torch.onnx for
PyTorch modules.

Every converted model speaks Flywheel's contract: one FP32 input `features` of shape
[batch, n_features]; a classifier answers `label` (INT64 [batch]) and `probabilities`
(FP32 [batch, classes]), a regressor `prediction` (FP32). The gateway, the drift detector
and the retrain trigger read those names. Each converter is imported on first use: a
training job needs only its own family's.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import onnx

FEATURES = "features"
LABEL = "label"
PROBABILITIES = "probabilities"
PREDICTION = "prediction"
OPSET = 17
"""The ONNX opset of the converted models: within what every supported onnxruntime runs."""
TREE_OPSET = 15
"""onnxmltools' own ceiling for XGBoost and LightGBM."""


class Task(StrEnum):
    CLASSIFICATION = "classification"
    REGRESSION = "regression"


class Family(StrEnum):
    SKLEARN = "scikit-learn"
    XGBOOST = "xgboost"
    LIGHTGBM = "lightgbm"
    PYTORCH = "pytorch"


@dataclass(frozen=True)
class Converted:
    """A model as ONNX, with what it is."""

    onnx: bytes
    family: Family
    task: Task
    n_features: int


class UnsupportedModel(TypeError):
    """A model the SDK cannot convert; the message says which kinds it can."""


def family_of(model: Any) -> Family:
    modules = [cls.__module__ for cls in type(model).__mro__]
    if any(module.startswith("torch.nn") for module in modules):
        return Family.PYTORCH
    top = modules[0].split(".")[0]
    families = {"sklearn": Family.SKLEARN, "xgboost": Family.XGBOOST, "lightgbm": Family.LIGHTGBM}
    if top in families:
        return families[top]
    raise UnsupportedModel(
        f"cannot convert a {type(model).__module__}.{type(model).__name__}: register a "
        "fitted scikit-learn estimator or pipeline, an XGBoost or LightGBM scikit-learn "
        "model (XGBClassifier, LGBMRegressor, ...) or a torch.nn.Module"
    )


def task_of(model: Any, family: Family, task: Task | str | None) -> Task:
    if task is not None:
        return Task(task)
    if family is Family.PYTORCH:
        raise UnsupportedModel(
            "a PyTorch module's outputs may be logits or values: pass task='classification' "
            "(logits over classes) or task='regression'"
        )
    if hasattr(model, "predict_proba"):
        return Task.CLASSIFICATION
    return Task.REGRESSION


def to_onnx(model: Any, n_features: int, task: Task | str | None = None) -> Converted:
    """`model`, fitted, as ONNX in Flywheel's contract."""
    family = family_of(model)
    chosen = task_of(model, family, task)
    if family is Family.PYTORCH:
        proto = _from_torch(model, n_features, chosen)
    else:
        proto = _from_tree_or_sklearn(model, family, n_features, chosen)
    names = [LABEL, PROBABILITIES] if chosen is Task.CLASSIFICATION else [PREDICTION]
    _rename_outputs(proto, names)
    return Converted(proto.SerializeToString(), family, chosen, n_features)


def _from_tree_or_sklearn(model: Any, family: Family, n_features: int, task: Task) -> Any:
    if family is Family.SKLEARN:
        from skl2onnx import to_onnx as sklearn_to_onnx
        from skl2onnx.common.data_types import FloatTensorType

        options = {id(model): {"zipmap": False}} if task is Task.CLASSIFICATION else None
        return sklearn_to_onnx(
            model,
            initial_types=[(FEATURES, FloatTensorType([None, n_features]))],
            options=options,
            target_opset=OPSET,
        )
    from onnxmltools import convert_lightgbm, convert_xgboost
    from onnxmltools.convert.common.data_types import FloatTensorType as MlFloatTensorType

    types = [(FEATURES, MlFloatTensorType([None, n_features]))]
    if family is Family.XGBOOST:
        return convert_xgboost(model, initial_types=types, target_opset=TREE_OPSET)
    return convert_lightgbm(model, initial_types=types, target_opset=TREE_OPSET, zipmap=False)


def _from_torch(module: Any, n_features: int, task: Task) -> Any:
    import torch

    class Contract(torch.nn.Module):
        """The module's logits as label and probabilities, or its values as predictions."""

        def __init__(self) -> None:
            super().__init__()
            self.module = module

        def forward(self, features: torch.Tensor) -> Any:
            out = self.module(features)
            if task is Task.CLASSIFICATION:
                return torch.argmax(out, dim=1), torch.softmax(out, dim=1)
            return out.reshape(-1)

    wrapped = Contract().eval()
    example = torch.zeros((2, n_features), dtype=torch.float32)
    batch = torch.export.Dim("batch")
    program = torch.onnx.export(
        wrapped,
        (example,),
        input_names=[FEATURES],
        dynamic_shapes={"features": {0: batch}},
        opset_version=max(OPSET, 18),  # the exporter's own floor
        dynamo=True,
    )
    if program is None:  # the exporter returns one unless told to write a file
        raise UnsupportedModel("torch.onnx.export returned no model")
    return program.model_proto


def _rename_outputs(proto: onnx.ModelProto, names: list[str]) -> None:
    """The graph's outputs, in order, under Flywheel's names (the converters name them
    after their own conventions: output_label, variable, ...)."""
    if len(proto.graph.output) != len(names):
        raise UnsupportedModel(
            f"the converted model has {len(proto.graph.output)} outputs; a "
            f"{'classifier' if len(names) == 2 else 'regressor'} gives {len(names)} "
            f"({', '.join(names)})"
        )
    renames = {output.name: name for output, name in zip(proto.graph.output, names, strict=True)}
    for node in proto.graph.node:
        node.output[:] = [renames.get(name, name) for name in node.output]
        node.input[:] = [renames.get(name, name) for name in node.input]
    for output in proto.graph.output:
        output.name = renames[output.name]
