"""The drift detector on real traffic: registry, gateway and detector on real Kafka."""

from __future__ import annotations

import asyncio
import json
import re
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import numpy as np
import pytest
from aiokafka import AIOKafkaProducer
from flywheel_cli import app as cli
from flywheel_cli.connection import Addresses
from typer.testing import CliRunner, Result

from flywheel.deployer.v1 import events_pb2 as deployer_events
from flywheel.deployer.v1 import types_pb2 as deployer_types
from flywheel.drift.v1 import drift_pb2 as drift_pb
from flywheel.drift.v1 import drift_pb2_grpc as drift_grpc
from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel.drift.v1 import types_pb2 as drift_types
from flywheel.registry.v1 import registry_pb2_grpc as registry_grpc
from flywheel_common.dead_letters import REASON
from flywheel_common.events import header
from flywheel_common.registration import registration
from flywheel_common.service import Service
from flywheel_common.settings import AuthSettings, Role, StaticToken
from flywheel_common.timestamps import duration
from flywheel_common.topics import DEPLOYMENTS, DLQ, DRIFT_ALERTS, MODEL_METRICS, PREDICTIONS
from flywheel_drift.app import build as build_drift
from flywheel_drift.settings import DriftSettings
from flywheel_testing.browser import rendered_dom
from flywheel_testing.identity import bearer
from flywheel_testing.kafka import client_options, read_topic
from flywheel_testing.models import IrisModels
from flywheel_testing.platform import in_process
from flywheel_testing.tls import pki, secure_channel
from inference import grpc_service_pb2 as inference_pb
from inference import grpc_service_pb2_grpc as inference_grpc

WINDOW = 100


@pytest.fixture
async def services(
    kafka_bootstrap: str, tmp_path: Path, iris_models: IrisModels
) -> AsyncIterator[tuple[Service, Service, Service, str]]:
    model = f"iris-{uuid.uuid4().hex[:8]}"
    async with in_process(kafka_bootstrap, tmp_path) as platform:
        registry = await platform.registry()
        async with secure_channel(registry.grpc.address) as channel:
            stub = registry_grpc.RegistryServiceStub(channel)
            await stub.RegisterModelVersion(
                iter(
                    registration(model, iris_models.classifier, sample=iris_models.reference_sample)
                )
            )
        gateway = await platform.gateway()
        drift = await platform.drift(window_size=WINDOW, auth=_tokens(model))
        publisher = await platform.publisher("flywheel-deployer")
        await platform.forget_deployments([model])
        state = deployer_events.DeploymentState(
            model=model,
            routes=[deployer_types.TrafficRoute(version=1, weight_percent=100)],
            generation=1,
        )
        await publisher.publish(DEPLOYMENTS, state, subject=model)
        yield registry, gateway, drift, model


ADMIN, READER, STRANGER = "admin-token", "reader-token", "stranger-token"


def _tokens(model: str) -> AuthSettings:
    """The admin; a reader of the model; a reader of other models only."""
    return AuthSettings(
        tokens={
            ADMIN: Role.ADMIN,
            READER: StaticToken(role=Role.READER, models=[model]),
            STRANGER: StaticToken(role=Role.READER, models=["other-*"]),
        }
    )


async def infer(address: str, model: str, rows: np.ndarray) -> None:
    async with secure_channel(address) as channel:
        stub = inference_grpc.GRPCInferenceServiceStub(channel)
        async with asyncio.timeout(30):
            while not await ready(stub, model):  # until the deployment is applied
                await asyncio.sleep(0.1)
        for row in rows:
            await stub.ModelInfer(
                inference_pb.ModelInferRequest(
                    model_name=model,
                    id=uuid.uuid4().hex,
                    inputs=[
                        inference_pb.ModelInferRequest.InferInputTensor(
                            name="features", datatype="FP32", shape=[1, 4]
                        )
                    ],
                    raw_input_contents=[row.astype(np.float32).tobytes()],
                )
            )


async def ready(stub: Any, model: str) -> bool:
    try:
        answer = await stub.ModelReady(inference_pb.ModelReadyRequest(name=model))
    except grpc.aio.AioRpcError:
        return False  # NOT_FOUND until the routing arrives
    return bool(answer.ready)


async def events_of(
    bootstrap: str, topic: str, model: str, at_least: int, partitions: int = 3
) -> list[Any]:
    async with asyncio.timeout(120):
        while True:
            records = await read_topic(
                bootstrap, topic, at_least=0, partitions=partitions, timeout_ms=2000
            )
            mine = [r for r in records if r.key == model.encode()]
            if len(mine) >= at_least:
                return mine
            await asyncio.sleep(0.5)


async def test_windows_metrics_and_a_shifted_feature_alerted_with_its_report(
    services: tuple[Service, Service, Service, str],
    iris_models: IrisModels,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    _, gateway, drift, model = services
    rng = np.random.default_rng(7)
    features = iris_models.features
    normal = features[rng.integers(0, len(features), 2 * WINDOW)]
    await infer(gateway.grpc.address, model, normal)

    producer = AIOKafkaProducer(**client_options(kafka_bootstrap))
    await producer.start()
    try:  # garbage on the stream: dead-lettered, and the stream goes on
        await producer.send_and_wait(PREDICTIONS.name, b"\x00not a cloudevent", key=model.encode())
    finally:
        await producer.stop()

    shifted = features[rng.integers(0, len(features), WINDOW)].copy()
    shifted[:, 2] += 3.0
    await infer(gateway.grpc.address, model, shifted)

    metrics = await events_of(kafka_bootstrap, MODEL_METRICS.name, model, at_least=3)
    windows = [drift_events.ModelMetricsWindow.FromString(r.value) for r in metrics]
    assert [w.window.index for w in windows] == [0, 1, 2]
    assert all(w.window.kind == drift_types.WINDOW_KIND_COUNT for w in windows)
    assert all(w.request_count == WINDOW and w.error_count == 0 for w in windows)
    assert all(w.latency.p99_ms > 0 for w in windows)
    assert sum(windows[0].output_histograms[0].histogram.counts) == WINDOW
    # Before any label: the accuracy the classifier's own probabilities promise.
    estimates = [w.estimate for w in windows]
    assert all(e.prediction_count == WINDOW and e.calibration_labels == 0 for e in estimates)
    assert all(0.5 < e.accuracy <= 1.0 for e in estimates)
    assert not windows[0].label_metrics.HasField("accuracy")

    [alert_record] = await events_of(kafka_bootstrap, DRIFT_ALERTS.name, model, at_least=1)
    alert = json.loads(alert_record.value)  # JSON for kcat and jq
    assert alert["window"]["index"] == "2"
    drifted = {(f["feature"], f["test"]) for f in alert["findings"]}
    assert ("f2", "DRIFT_TEST_KOLMOGOROV_SMIRNOV") in drifted
    [shifted_feature] = [
        f
        for f in alert["findings"]
        if (f["feature"], f["test"]) == ("f2", "DRIFT_TEST_KOLMOGOROV_SMIRNOV")
    ]
    assert float(shifted_feature["adjustedPValue"]) < 0.01
    assert shifted_feature["drifted"] is True

    dead = await read_topic(kafka_bootstrap, DLQ.name, at_least=1, partitions=3, timeout_ms=5000)
    mine = [r for r in dead if r.key == model.encode()]
    assert mine
    assert "undecodable" in (header(mine[-1].headers, REASON) or "")

    async with secure_channel(drift.grpc.address) as channel:
        status = await drift_grpc.DriftServiceStub(channel).GetDriftStatus(
            drift_pb.GetDriftStatusRequest(model=model), metadata=bearer(ADMIN)
        )
        alerts = await drift_grpc.DriftServiceStub(channel).ListAlerts(
            drift_pb.ListAlertsRequest(model=model), metadata=bearer(ADMIN)
        )
    [version] = status.versions
    assert version.reference_loaded
    assert version.windows_closed == 3
    assert [a.window.index for a in alerts.alerts] == [2]
    assert [m.window.index for m in version.recent_metrics] == [0, 1, 2]
    assert [h.feature for h in version.latest_histograms] == ["f0", "f1", "f2", "f3"]
    await _the_alert_links_its_report(alert["reportUrl"], model, tmp_path)


async def _the_alert_links_its_report(url: str, model: str, folder: Path) -> None:
    """The alert's link answers the report of its window to a reader of the model, over
    TLS; others are refused; Chromium shows the shifted feature highlighted."""
    assert url.startswith("https://127.0.0.1:")
    assert url.endswith(f"/reports/{model}?version=1&window=2")
    tls = ssl.create_default_context(cafile=pki().ca_file)
    async with aiohttp.ClientSession() as http:

        async def get(address: str, token: str | None) -> tuple[int, str]:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with http.get(address, headers=headers, ssl=tls) as response:
                return response.status, await response.text()

        status, page = await get(url, READER)
        refusals = [(await get(url, token))[0] for token in (None, "forged", STRANGER)]
        unknown = await get(url.replace(model, f"{model}-unknown"), ADMIN)
        old_window = await get(url.replace("window=2", "window=0"), ADMIN)
    assert status == 200
    assert refusals == [401, 401, 403]
    assert unknown[0] == 404
    assert "have been seen yet" in unknown[1]
    assert old_window[0] == 404
    assert "not kept" in old_window[1]

    saved = folder / "report.html"
    written = await asyncio.to_thread(_cli_report, url.partition("/reports/")[0], model, saved)
    assert written.exit_code == 0, written.output
    assert saved.read_text().count('class="drifted"') == page.count('class="drifted"') > 0
    dom = rendered_dom(saved)
    assert re.search(r'<tr class="drifted" data-feature="f2"><td>f2</td><td>kolmogorov', dom)
    assert re.search(r'<div class="feature drifted" data-feature="f2">', dom)
    assert dom.count('class="feature"') == 3  # the other features, not highlighted
    assert "corrected p-value" in dom
    assert "Metrics over time" in dom


def _cli_report(base_url: str, model: str, output: Path) -> Result:
    """`flywheel report MODEL --window 2 -o OUTPUT` as a reader of the model."""
    addresses = Addresses(drift_reports=base_url, token=READER, tls=pki().client_tls())
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli.State, "addresses", addresses)
        return CliRunner().invoke(cli.app, ["report", model, "--window", "2", "-o", str(output)])


async def test_a_time_window_closes_when_traffic_stops(
    services: tuple[Service, Service, Service, str],
    iris_models: IrisModels,
    kafka_bootstrap: str,
) -> None:
    _, gateway, drift, model = services
    async with secure_channel(drift.grpc.address) as channel:
        window = drift_types.WindowSpec(
            kind=drift_types.WINDOW_KIND_TIME, size_duration=duration(3.0)
        )
        await drift_grpc.DriftServiceStub(channel).SetMonitorConfig(
            drift_pb.SetMonitorConfigRequest(
                config=drift_types.MonitorConfig(model=model, window=window)
            ),
            metadata=bearer(ADMIN),
        )
    await infer(gateway.grpc.address, model, iris_models.features[:10])
    # No request follows: the detector's clock alone closes the window (or the two, should
    # the requests straddle a 3-second boundary).
    async with asyncio.timeout(60):
        while True:
            records = await events_of(kafka_bootstrap, MODEL_METRICS.name, model, at_least=1)
            windows = [drift_events.ModelMetricsWindow.FromString(r.value) for r in records]
            if sum(w.request_count for w in windows) == 10:
                break
    assert all(w.window.kind == drift_types.WINDOW_KIND_TIME for w in windows)
    assert all(w.window.end.ToSeconds() - w.window.start.ToSeconds() <= 3 for w in windows)


async def test_monitor_configs_are_validated_versioned_and_survive_a_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    async with in_process(kafka_bootstrap, tmp_path) as platform:
        settings = platform.settings(DriftSettings, "drift")
        config = drift_types.MonitorConfig(
            model="iris",
            window=drift_types.WindowSpec(kind=drift_types.WINDOW_KIND_COUNT, size_count=500),
            correction=drift_types.MULTIPLE_TESTING_CORRECTION_BONFERRONI,
            categorical_features=["colour"],
            tests=[
                drift_types.DRIFT_TEST_KOLMOGOROV_SMIRNOV,
                drift_types.DRIFT_TEST_PCA_RECONSTRUCTION,
            ],
        )
        config.thresholds.alpha = 0.001
        first = build_drift(settings)
        await first.start()
        try:
            async with secure_channel(first.grpc.address) as channel:
                stub = drift_grpc.DriftServiceStub(channel)
                stored = await stub.SetMonitorConfig(
                    drift_pb.SetMonitorConfigRequest(config=config)
                )
                assert stored.config.revision == 1
                with pytest.raises(grpc.aio.AioRpcError) as stale:
                    await stub.SetMonitorConfig(
                        drift_pb.SetMonitorConfigRequest(config=config, expected_revision=0)
                    )
                assert stale.value.code() == grpc.StatusCode.FAILED_PRECONDITION
                broken = drift_types.MonitorConfig(model="iris")
                broken.thresholds.alpha = 2.0
                with pytest.raises(grpc.aio.AioRpcError) as invalid:
                    await stub.SetMonitorConfig(drift_pb.SetMonitorConfigRequest(config=broken))
                assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert "thresholds.alpha" in (invalid.value.details() or "")
        finally:
            await first.stop()

        second = build_drift(settings)
        await second.start()
        try:
            async with secure_channel(second.grpc.address) as channel:
                stub = drift_grpc.DriftServiceStub(channel)
                found = await stub.GetMonitorConfig(drift_pb.GetMonitorConfigRequest(model="iris"))
                default = await stub.GetMonitorConfig(
                    drift_pb.GetMonitorConfigRequest(model="other")
                )
        finally:
            await second.stop()
    assert not found.is_default
    assert (found.config.revision, found.config.window.size_count) == (1, 500)
    assert found.config.thresholds.alpha == pytest.approx(0.001)
    assert list(found.config.categorical_features) == ["colour"]
    assert list(found.config.tests) == [
        drift_types.DRIFT_TEST_KOLMOGOROV_SMIRNOV,
        drift_types.DRIFT_TEST_PCA_RECONSTRUCTION,
    ]
    assert default.is_default
