"""The SDK against a real registry and gateway: a scikit-learn pipeline, an XGBoost model, a
LightGBM model and a small PyTorch module registered with `register`, each served by the
gateway with the original's answers, and ground truth sent with the client reaching Kafka."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import lightgbm
import numpy as np
import torch
import xgboost
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from flywheel.common.v1 import types_pb2 as common
from flywheel.deployer.v1 import events_pb2 as deployer_events
from flywheel.deployer.v1 import types_pb2 as deployer_types
from flywheel.drift.v1.ground_truth_pb2 import GroundTruth
from flywheel.registry.v1 import registry_pb2 as registry_pb
from flywheel.registry.v1 import registry_pb2_grpc as registry_grpc
from flywheel_common.events import EventTypes, decode_event
from flywheel_common.topics import DEPLOYMENTS, GROUND_TRUTH
from flywheel_gateway.app import build as build_gateway
from flywheel_gateway.settings import GatewaySettings
from flywheel_sdk import Client, Lineage, Registry, register_async
from flywheel_testing.kafka import read_topic
from flywheel_testing.platform import in_process
from flywheel_testing.tls import pki, secure_channel


def data() -> tuple[np.ndarray, np.ndarray]:
    cancer = load_breast_cancer()
    return cancer.data.astype(np.float32), cancer.target


def small_torch_classifier(x: np.ndarray, y: np.ndarray) -> torch.nn.Module:
    torch.manual_seed(0)
    scale = torch.from_numpy(x.std(axis=0) + 1e-6)
    module = torch.nn.Sequential(
        torch.nn.Linear(x.shape[1], 8), torch.nn.Tanh(), torch.nn.Linear(8, 2)
    )
    optimiser = torch.optim.Adam(module.parameters(), lr=0.02)
    features, labels = torch.from_numpy(x) / scale, torch.from_numpy(y.astype(np.int64))
    for _ in range(150):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(module(features), labels).backward()
        optimiser.step()
    with torch.no_grad():  # the scaling folded into the first layer: one module to export
        module[0].weight /= scale
    return module


async def test_every_family_is_registered_and_served_with_the_originals_answers(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    x, y = data()
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    models: dict[str, tuple[Any, str | None]] = {
        "sdk-sklearn": (pipeline.fit(x, y), None),
        "sdk-xgboost": (xgboost.XGBClassifier(n_estimators=30, max_depth=3).fit(x, y), None),
        "sdk-lightgbm": (lightgbm.LGBMClassifier(n_estimators=30, verbose=-1).fit(x, y), None),
        "sdk-pytorch": (small_torch_classifier(x, y), "classification"),
    }
    async with in_process(kafka_bootstrap, tmp_path) as services:
        registry_service = await services.registry()
        registry = Registry(registry_service.grpc.address, pki().client_tls())
        versions = {}
        for name, (model, task) in models.items():
            registered = await register_async(
                model,
                name,
                reference=x[:300],
                metrics={"accuracy": float(np.mean(_original_labels(model, x) == y))},
                lineage=Lineage(dataset_uri="sklearn:breast_cancer", triggered_by="manual:test"),
                task=task,
                registry=registry,
            )
            assert registered.version == 1
            assert registered.agreement.label_agreement == 1.0
            versions[name] = registered.version

        async with secure_channel(registry_service.grpc.address) as channel:
            stub = registry_grpc.RegistryServiceStub(channel)
            for name in models:
                stored = await stub.GetModelVersion(
                    registry_pb.GetModelVersionRequest(model=name, version=1)
                )
                signature = stored.model_version.signature
                assert [i.name for i in signature.inputs] == ["features"], name
                assert [o.name for o in signature.outputs] == ["label", "probabilities"], name
                assert stored.model_version.lineage.dataset_uri == "sklearn:breast_cancer"
                assert "accuracy" in stored.model_version.metrics

        settings = services.settings(GatewaySettings, "gateway")
        gateway = await services.start(build_gateway(settings))
        publisher = await services.publisher("flywheel-deployer")
        for generation, name in enumerate(models, start=1):
            state = deployer_events.DeploymentState(
                model=name,
                routes=[
                    deployer_types.TrafficRoute(
                        version=1, weight_percent=100, role=common.TRAFFIC_ROLE_STABLE
                    )
                ],
                strategy=deployer_types.STRATEGY_DIRECT,
                generation=generation,
            )
            await publisher.publish(DEPLOYMENTS, state, subject=name)
        client = Client(gateway.grpc.address, pki().client_tls(), kafka=settings.kafka)
        run = uuid.uuid4().hex[:8]
        labels = {f"r-1-{run}": 1, f"r-2-{run}": 0}
        try:
            for name, (model, _) in models.items():
                answer = await _served(client, name, x[:50])
                assert answer.version == 1
                np.testing.assert_array_equal(answer.label, _original_labels(model, x[:50]))
            await client.send_ground_truth_async("sdk-sklearn", labels)
        finally:
            client.close()
    # The topic is shared (other tests' labels, a fuzz run's malformed records): only the
    # records keyed by this test's request ids are its own.
    records = await read_topic(
        kafka_bootstrap, GROUND_TRUTH.name, at_least=2, partitions=GROUND_TRUTH.partitions
    )
    mine = [r for r in records if r.key is not None and r.key.decode() in labels]
    types = EventTypes.flywheel()
    truths = [decode_event(r.headers, r.value, types).message for r in mine]
    sent = {
        t.request_id: t.int64_label
        for t in truths
        if isinstance(t, GroundTruth) and t.model == "sdk-sklearn"
    }
    assert sent == labels


async def _served(client: Client, model: str, rows: np.ndarray) -> Any:
    """The gateway's answer once it has loaded the model (it loads on the routing event)."""
    for _ in range(300):
        try:
            return await asyncio.to_thread(client.infer, model, rows)
        except Exception:
            await asyncio.sleep(0.1)
    return await asyncio.to_thread(client.infer, model, rows)


def _original_labels(model: Any, rows: np.ndarray) -> np.ndarray:
    if isinstance(model, torch.nn.Module):
        with torch.no_grad():
            return np.argmax(model(torch.from_numpy(rows)).numpy(), axis=1)
    return np.asarray(model.predict(rows))
