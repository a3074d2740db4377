"""The gateway with the stock tritonclient, a real registry and real Kafka."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import onnxruntime
import pytest

from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.events import EventTypes, decode_event
from flywheel_common.prediction_logs import unpack
from flywheel_common.settings import AuthSettings, Role
from flywheel_common.topics import PREDICTIONS
from flywheel_testing.kafka import read_topic
from flywheel_testing.models import IrisModels

from .conftest import Platform, drive


async def prediction_logs(kafka_bootstrap: str, model: str, at_least: int) -> list[PredictionLog]:
    types = EventTypes.flywheel()
    for _ in range(30):
        records = await read_topic(
            kafka_bootstrap,
            PREDICTIONS.name,
            at_least=0,
            partitions=PREDICTIONS.partitions,
            timeout_ms=60_000,
        )
        logs = [
            log
            for r in records
            if r.key == model.encode()
            for log in unpack(decode_event(r.headers, r.value, types).message)
        ]
        if len(logs) >= at_least:
            return logs
        await asyncio.sleep(0.5)
    return logs


STATUS = {
    "grpc": {
        "invalid": "StatusCode.INVALID_ARGUMENT",
        "not found": "StatusCode.NOT_FOUND",
        "unauthenticated": "StatusCode.UNAUTHENTICATED",
        "plaintext": "StatusCode.UNAVAILABLE",
    },
    "http": {
        "invalid": "400",
        "not found": "404",
        "unauthenticated": "401",
        "plaintext": "connection refused",
    },
}
"""What each stock client reports for the same refusal."""

PROTOCOLS = pytest.mark.parametrize("protocol", ["grpc", "http"])


@PROTOCOLS
async def test_stock_tritonclient_speaks_every_rpc(
    platform: Platform, iris: IrisModels, model_name: str, kafka_bootstrap: str, protocol: str
) -> None:
    assert await platform.register(model_name, iris.classifier) == 1
    await platform.deploy(model_name, {1: 100}, generation=1)
    result = await drive(
        platform.address_of(protocol), "protocol", protocol=protocol, model=model_name
    )
    for flag in ("live", "ready", "model_ready", "v1_ready"):
        assert result[flag], flag
    assert not result["missing_ready"]
    assert result["server"] == "flywheel-gateway"
    assert result["inputs"] == [["features", "FP32", [-1, 4]]]
    assert result["outputs"] == [["label", "INT64", [-1]], ["probabilities", "FP32", [-1, 3]]]
    if protocol == "http":
        assert result["parameters"] == {"execution_provider": "CPUExecutionProvider"}
    assert (result["id"], result["version"]) == ("req-42", "1")
    assert result["selected"] == ["label"]
    session = onnxruntime.InferenceSession(iris.classifier, providers=["CPUExecutionProvider"])
    label, probabilities = session.run(None, {"features": np.asarray(result["x"], np.float32)})
    assert result["label"] == result["json_label"] == label.tolist()
    np.testing.assert_allclose(result["probabilities"], probabilities, rtol=1e-6)

    logs = await prediction_logs(kafka_bootstrap, model_name, at_least=2)
    logged = {log.request_id: log for log in logs}
    assert "req-42" in logged
    assert logged["req-42"].version == 1
    assert logged["req-42"].inputs[0].name == "features"
    assert np.frombuffer(logged["req-42"].inputs[0].data, np.float32).reshape(3, 4).tolist() == (
        np.asarray(result["x"], np.float32).tolist()
    )


@PROTOCOLS
async def test_invalid_inputs_are_rejected_precisely(
    platform: Platform, iris: IrisModels, model_name: str, protocol: str
) -> None:
    await platform.register(model_name, iris.classifier)
    await platform.deploy(model_name, {1: 100}, generation=1)
    result = await drive(
        platform.address_of(protocol), "invalid", protocol=protocol, model=model_name
    )
    expectations = {
        "wrong datatype": ("invalid", "expected datatype FP32, received FP64"),
        "wrong shape": ("invalid", "expected shape [-1, 4], received [2, 3]"),
        "wrong name": ("invalid", "missing input(s) features"),
        "batch too large": ("invalid", "batch of 300 exceeds the maximum of 256"),
        "nan": ("invalid", "NaN or Inf"),
        "unknown model": ("not found", "is not deployed"),
        "unknown version": ("not found", "version 99 is not served"),
        "bad version": ("invalid", "must be a version number"),
        "unknown output": ("invalid", "unknown output(s) nope"),
    }
    for case, (status, fragment) in expectations.items():
        got_status, message = result[case]
        assert got_status == STATUS[protocol][status], (case, result[case])
        assert fragment in message, (case, message)


async def test_weighted_split_and_sticky_keys(
    platform: Platform, iris: IrisModels, model_name: str
) -> None:
    await platform.register(model_name, iris.classifier)
    await platform.register(model_name, iris.retrained)
    await platform.deploy(
        model_name, {1: 70, 2: 30}, generation=1, sticky_key="flywheel-routing-key"
    )
    split = await drive(platform.address, "load", model=model_name, requests=5000, concurrency=32)
    assert split["failure_count"] == 0, split["failures"]
    share = split["versions"]["2"] / split["sent"]
    assert abs(share - 0.30) <= 0.025, split  # 3.9 standard deviations of 5,000 draws
    sticky = await drive(
        platform.address, "load", model=model_name, requests=3000, concurrency=16, keys=200
    )
    assert sticky["failure_count"] == 0
    assert sticky["keys_seen"] == 200
    assert sticky["sticky_changes"] == 0
    assert set(sticky["versions"]) == {"1", "2"}


async def test_shadow_outputs_are_logged_never_returned(
    platform: Platform, iris: IrisModels, model_name: str, kafka_bootstrap: str
) -> None:
    await platform.register(model_name, iris.classifier)
    await platform.register(model_name, iris.retrained)
    await platform.deploy(model_name, {1: 100}, generation=1, shadow=2)
    result = await drive(platform.address, "load", model=model_name, requests=200, concurrency=8)
    assert result["versions"] == {"1": 200}
    logs = await prediction_logs(kafka_bootstrap, model_name, at_least=400)
    shadow = [log for log in logs if log.shadow]
    served = [log for log in logs if not log.shadow]
    assert len(served) == 200
    assert {log.version for log in served} == {1}
    assert len(shadow) == 200
    assert {log.version for log in shadow} == {2}
    assert {log.request_id for log in shadow} == {log.request_id for log in served}
    assert all(log.outputs for log in shadow)


async def test_twenty_swaps_under_load_fail_no_request(
    platform: Platform, iris: IrisModels, model_name: str, tmp_path: Path
) -> None:
    await platform.register(model_name, iris.classifier)
    await platform.register(model_name, iris.retrained)
    await platform.deploy(model_name, {1: 100}, generation=1)
    done = tmp_path / "swapped"
    load = asyncio.create_task(
        drive(
            platform.address,
            "load",
            model=model_name,
            seconds=60.0,
            stop_file=str(done),
            concurrency=8,
        )
    )
    await asyncio.sleep(2.0)
    for swap in range(20):
        version = 2 if swap % 2 == 0 else 1
        await platform.deploy(model_name, {version: 100}, generation=swap + 2)
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)  # the last swap under load too, then the load ends
    done.touch()
    result = await load
    assert result["failure_count"] == 0, result["failures"]
    assert set(result["versions"]) == {"1", "2"}
    assert result["sent"] > 500


@pytest.mark.parametrize("own_platform", [{"max_batch_size": 1}], indirect=True)
async def test_batching_off_serves_the_same(
    own_platform: Platform, iris: IrisModels, model_name: str
) -> None:
    await own_platform.register(model_name, iris.classifier)
    await own_platform.deploy(model_name, {1: 100}, generation=1)
    result = await drive(
        own_platform.address, "load", model=model_name, requests=300, concurrency=8
    )
    assert result["failure_count"] == 0
    assert result["versions"] == {"1": 300}


@pytest.mark.parametrize(
    "own_platform", [{"auth": AuthSettings(tokens={"reader-token": Role.READER})}], indirect=True
)
async def test_stock_tritonclient_connects_over_tls_with_a_bearer_token_as_readme_shows(
    own_platform: Platform, iris: IrisModels, model_name: str
) -> None:
    await own_platform.register(model_name, iris.classifier)
    await own_platform.deploy(model_name, {1: 100}, generation=1)
    for protocol in ("grpc", "http"):
        result = await drive(
            own_platform.address_of(protocol),
            "bearer",
            protocol=protocol,
            model=model_name,
            token="reader-token",
        )
        status = STATUS[protocol]
        assert result == {
            "with token": "1",
            "without token": status["unauthenticated"],
            "wrong token": status["unauthenticated"],
            "plaintext": status["plaintext"],
        }, protocol
