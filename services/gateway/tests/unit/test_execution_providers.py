"""The execution provider a version reports is the one its session runs on, never CUDA after
onnxruntime fell back to the CPU; the reason for a fallback; the metric of loaded versions."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import cast

import onnx
import pytest
from onnx import TensorProto, helper
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from flywheel_common.artifact_cache import ArtifactFetcher
from flywheel_gateway.cuda import has_nvidia_gpu
from flywheel_gateway.models import LoadState, ModelManager, RuntimeOptions
from flywheel_gateway.providers import (
    CPU,
    CUDA,
    fallback_reason,
    placement,
    requested_providers,
    wants_cuda,
)


class FakeSession:
    """What the gateway reads of an onnxruntime session to know where it runs."""

    def __init__(self, providers: list[str]) -> None:
        self._providers = providers

    def get_providers(self) -> list[str]:
        return self._providers


@pytest.mark.parametrize(
    ("preference", "has_gpu", "wanted"),
    [
        ("cuda", False, True),
        ("cuda", True, True),
        ("auto", True, True),
        ("auto", False, False),
        ("cpu", True, False),
    ],
)
def test_cuda_is_wanted_when_asked_for_or_auto_sees_a_gpu(
    preference: str, has_gpu: bool, wanted: bool
) -> None:
    assert wants_cuda(preference, has_gpu) is wanted


def test_cuda_is_requested_only_when_wanted_and_onnxruntime_has_it() -> None:
    assert requested_providers(True, [CUDA, CPU]) == [CUDA, CPU]
    assert requested_providers(True, [CPU]) == [CPU]
    assert requested_providers(False, [CUDA, CPU]) == [CPU]


@pytest.mark.parametrize(
    ("cuda_wanted", "reported", "provider", "fell_back"),
    [
        (True, [CUDA, CPU], CUDA, False),
        (True, [CPU], CPU, True),  # asked for CUDA, onnxruntime could not create it
        (False, [CPU], CPU, False),
        (True, [], CPU, True),
    ],
)
def test_the_provider_reported_is_the_one_the_session_reports(
    cuda_wanted: bool, reported: list[str], provider: str, fell_back: bool
) -> None:
    where = placement(cuda_wanted, FakeSession(reported).get_providers())
    assert (where.provider, where.fell_back) == (provider, fell_back)


def test_a_fallback_says_why() -> None:
    assert "no CUDA execution provider" in fallback_reason([CPU], True, [])
    assert "no NVIDIA GPU" in fallback_reason([CUDA, CPU], False, [])
    missing = "Failed to load libcublasLt.so.13: cannot open shared object file"
    reason = fallback_reason([CUDA, CPU], True, [missing])
    assert "gpu extra" in reason
    assert missing in reason
    assert "driver" in fallback_reason([CUDA, CPU], True, [])


class OneFileFetcher:
    """The registry's artifact fetcher, reduced to one ONNX file on disk."""

    def __init__(self, path: Path) -> None:
        self._path = path

    async def fetch(self, model: str, version: int) -> tuple[str, Path]:
        return "0" * 64, self._path

    async def close(self) -> None:
        return None


def relu_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 2])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 2])
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def loaded_gauge(reader: InMemoryMetricReader) -> dict[tuple[str, str, str], int]:
    data = reader.get_metrics_data()
    return {
        (
            str(point.attributes["model"]),
            str(point.attributes["version"]),
            str(point.attributes["execution_provider"]),
        ): int(point.value)
        for resource in data.resource_metrics
        for scope in resource.scope_metrics
        for metric in scope.metrics
        if metric.name == "flywheel.gateway.model.loaded"
        for point in metric.data.data_points
        if point.attributes
    }


@pytest.mark.skipif(has_nvidia_gpu(), reason="needs a machine where CUDA cannot run")
async def test_a_version_asked_for_cuda_on_a_machine_without_it_reports_the_cpu(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reader = InMemoryMetricReader()
    models = ModelManager(
        cast(ArtifactFetcher, OneFileFetcher(relu_model(tmp_path / "relu.onnx"))),
        RuntimeOptions(provider="cuda"),
        meter=MeterProvider(metric_readers=[reader]).get_meter("test"),
    )
    with caplog.at_level(logging.INFO, logger="flywheel_gateway"):
        task = models.load("relu", 1)
        assert task is not None
        await task
    [loaded] = models.versions
    assert loaded.state is LoadState.READY
    assert loaded.session is not None
    assert loaded.provider == CPU == loaded.session.get_providers()[0]
    [fallback] = [r for r in caplog.records if r.message.startswith("CUDA wanted but not used")]
    assert fallback.levelno == logging.WARNING
    assert fallback.__dict__["execution_provider"] == CPU
    assert fallback.__dict__["reason"]
    [ready] = [r for r in caplog.records if r.message == "model ready"]
    assert ready.__dict__["execution_provider"] == CPU
    assert loaded_gauge(reader) == {("relu", "1", CPU): 1}

    models.retire("relu", 1)
    assert loaded_gauge(reader) == {("relu", "1", CPU): 0}
    await models.stop()
