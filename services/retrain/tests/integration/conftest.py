"""A real registry, deployer and retrain trigger on real Kafka (shared by a module's tests),
a breast-cancer model of each test's own trained and promoted by the example pipeline, and
helpers that log traffic and labels."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from flywheel_examples import breast_cancer as example
from sklearn.datasets import load_breast_cancer

from flywheel.common.v1 import types_pb2 as common_types
from flywheel.deployer.v1 import deployer_pb2 as deployer_pb
from flywheel.deployer.v1 import deployer_pb2_grpc as deployer_grpc
from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel.drift.v1 import ground_truth_pb2
from flywheel.drift.v1 import types_pb2 as drift_types
from flywheel.gateway.v1 import events_pb2 as gateway_events
from flywheel.registry.v1 import registry_pb2 as registry_pb
from flywheel.registry.v1 import registry_pb2_grpc as registry_grpc
from flywheel.retrain.v1 import retrain_pb2 as retrain_pb
from flywheel.retrain.v1 import retrain_pb2_grpc as retrain_grpc
from flywheel.retrain.v1 import types_pb2 as retrain_types
from flywheel_common.publisher import EventPublisher
from flywheel_common.service import Service
from flywheel_common.timestamps import timestamp
from flywheel_common.topics import (
    DEPLOYMENTS,
    DRIFT_ALERTS,
    GROUND_TRUTH,
    MODEL_METRICS,
    PREDICTIONS,
    RETRAIN_EVENTS,
)
from flywheel_testing.kafka import collected_events, tombstone
from flywheel_testing.platform import Platform, in_process
from flywheel_testing.tls import pki, secure_channel
from flywheel_testing.waiting import bounded, eventually


def breast_cancer(shift_sigmas: float = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The bundled breast-cancer rows in a random order, every feature moved by
    `shift_sigmas` standard deviations (the labels stay: the world changed, not the truth)."""
    features, labels = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(seed).permutation(len(labels))
    moved = features + shift_sigmas * features.std(axis=0)
    return moved[order], labels[order]


def train_first_version(registry: str, model: str, data_dir: Path) -> None:
    """The example pipeline's first training: v1, promoted. Run in this process: its command,
    as a user runs it, is README's test's and the e2e loop's, and a process of its own cost
    every test here seconds of imports."""
    options = argparse.Namespace(
        model=model,
        registry=registry,
        token="",
        data_dir=data_dir,
        estimator="logistic",
        promote=True,
        tls=pki().client_tls(),
    )
    example.first_training(options)


@dataclass
class Loop:
    model: str
    registry: Service
    deployer: Service
    retrain: Service | None
    publisher: EventPublisher
    platform: Platform
    data_dir: Path
    events: list[Any] = field(default_factory=list)
    retrain_address: str = ""
    _channels: list[grpc.aio.Channel] = field(default_factory=list)

    def _stub(self, factory: Any, address: str) -> Any:
        channel = secure_channel(address)
        self._channels.append(channel)
        return factory(channel)

    @property
    def api(self) -> Any:
        address = self.retrain_address or (self.retrain.grpc.address if self.retrain else "")
        return self._stub(retrain_grpc.RetrainServiceStub, address)

    @property
    def registry_api(self) -> Any:
        return self._stub(registry_grpc.RegistryServiceStub, self.registry.grpc.address)

    @property
    def deployer_api(self) -> Any:
        return self._stub(deployer_grpc.DeployerServiceStub, self.deployer.grpc.address)

    async def set_policy(self, **fields: Any) -> retrain_types.RetrainPolicy:
        current = (
            await self.api.GetRetrainPolicy(retrain_pb.GetRetrainPolicyRequest(model=self.model))
        ).policy
        policy = retrain_types.RetrainPolicy()
        policy.CopyFrom(current)
        for name, value in fields.items():
            target = getattr(policy, name)
            if hasattr(target, "CopyFrom"):
                target.CopyFrom(value)
            else:
                setattr(policy, name, value)
        response = await self.api.SetRetrainPolicy(
            retrain_pb.SetRetrainPolicyRequest(policy=policy)
        )
        stored: retrain_types.RetrainPolicy = response.policy
        return stored

    async def log_traffic(self, features: np.ndarray, labels: np.ndarray) -> None:
        """Each row as a logged prediction of the production version, and its ground truth."""
        predictions, truths = [], []
        for row, label in zip(features, labels, strict=True):
            request_id = uuid.uuid4().hex
            row32 = row.astype(np.float32)[None, :]
            log = gateway_events.PredictionLog(
                request_id=request_id,
                model=self.model,
                version=1,
                inputs=[
                    common_types.Tensor(
                        name="features",
                        datatype="FP32",
                        shape=[1, row32.shape[1]],
                        data=row32.tobytes(),
                    )
                ],
                outputs=[
                    common_types.Tensor(
                        name="label",
                        datatype="INT64",
                        shape=[1],
                        data=np.array([1], np.int64).tobytes(),
                    )
                ],
                received_at=timestamp(datetime.now(UTC)),
            )
            predictions.append(
                PREDICTIONS.record(log, source="flywheel-gateway", subject=self.model)
            )
            truth = ground_truth_pb2.GroundTruth(
                request_id=request_id, model=self.model, int64_label=int(label)
            )
            truths.append(
                GROUND_TRUTH.record(truth, source="labels", subject=self.model, key=request_id)
            )
        await self.publisher.send(predictions)
        await self.publisher.send(truths)

    async def alert(
        self,
        alert_id: str = "",
        severity: drift_types.Severity.ValueType = drift_types.SEVERITY_HIGH,
        change_began_at: datetime | None = None,
    ) -> str:
        """A data-drift alert on version 1; with `change_began_at`, a concept-drift alert
        whose change began then."""
        alert_id = alert_id or uuid.uuid4().hex
        message = drift_events.DriftAlert(
            alert_id=alert_id,
            model=self.model,
            version=1,
            kinds=[drift_types.ALERT_KIND_DATA],
            severity=severity,
            features_tested=30,
            features_drifted=12,
            occurred_at=timestamp(datetime.now(UTC)),
        )
        if change_began_at is not None:
            message.kinds[:] = [drift_types.ALERT_KIND_CONCEPT]
            message.features_drifted = 0
            message.change_began_at.CopyFrom(timestamp(change_began_at))
        await self.publisher.publish(DRIFT_ALERTS, message, subject=self.model)
        return alert_id

    async def metrics_window(self, accuracy: float, labeled: int, version: int = 1) -> str:
        """A ModelMetricsWindow of `version` as the drift detector publishes it."""
        window_id = f"{self.model}-{version}-{uuid.uuid4().hex[:8]}"
        moment = timestamp(datetime.now(UTC))
        window = drift_events.ModelMetricsWindow(
            model=self.model,
            version=version,
            window=drift_types.WindowRef(window_id=window_id, start=moment, end=moment),
            request_count=100,
            label_metrics=drift_types.LabelMetrics(labeled_count=labeled, accuracy=accuracy),
            emitted_at=moment,
        )
        await self.publisher.publish(MODEL_METRICS, window, subject=self.model)
        return window_id

    async def runs(self) -> list[Any]:
        response = await self.api.ListRuns(retrain_pb.ListRunsRequest(model=self.model))
        return list(response.runs)

    async def wait_run(self, states: set[int], timeout: float = 120.0) -> Any:
        found: list[Any] = []

        async def reached() -> bool:
            found[:] = [r for r in await self.runs() if r.state in states]
            return bool(found)

        await eventually(reached, timeout, poll=0.2)
        return found[0]

    async def version(self, version: int) -> Any:
        response = await self.registry_api.GetModelVersion(
            registry_pb.GetModelVersionRequest(model=self.model, version=version)
        )
        return response.model_version

    async def production(self) -> int:
        response = await self.registry_api.GetModelVersionByAlias(
            registry_pb.GetModelVersionByAliasRequest(model=self.model, alias="production")
        )
        return int(response.model_version.version)

    async def versions(self) -> list[int]:
        response = await self.registry_api.ListModelVersions(
            registry_pb.ListModelVersionsRequest(model=self.model, page_size=100)
        )
        return sorted(v.version for v in response.model_versions)

    async def rollouts(self) -> list[Any]:
        response = await self.deployer_api.ListRollouts(
            deployer_pb.ListRolloutsRequest(model=self.model)
        )
        return list(response.rollouts)

    def of_type(self, name: str) -> list[Any]:
        return [e for e in self.events if type(e).__name__ == name]

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


@dataclass
class Services:
    platform: Platform
    registry: Service
    deployer: Service
    retrain: Service | None
    publisher: EventPublisher


@contextlib.asynccontextmanager
async def running_services(
    kafka_bootstrap: str, data_dir: Path, *, start_retrain: bool = True, **retrain_fields: Any
) -> AsyncIterator[Services]:
    async with in_process(kafka_bootstrap, data_dir) as platform:
        registry = await platform.registry()
        deployer = await platform.deployer()
        retrain = await platform.retrain(**retrain_fields) if start_retrain else None
        publisher = await platform.publisher("flywheel-tests")
        yield Services(platform, registry, deployer, retrain, publisher)


@contextlib.asynccontextmanager
async def loop_on(services: Services, data_dir: Path) -> AsyncIterator[Loop]:
    """A model of the test's own on `services`, its first version trained by the example
    pipeline and promoted, its retrain events collected. The shared routing topic forgets
    the model before and after, so no other run's routing state applies to it."""
    model = f"cancer-{uuid.uuid4().hex[:8]}"
    kafka = services.platform.kafka
    await tombstone(kafka, DEPLOYMENTS.name, [model])
    try:
        async with collected_events(kafka, RETRAIN_EVENTS, model) as events:
            loop = Loop(
                model,
                services.registry,
                services.deployer,
                services.retrain,
                services.publisher,
                services.platform,
                data_dir,
                events,
            )
            await asyncio.to_thread(
                train_first_version, services.registry.grpc.address, model, data_dir / "examples"
            )
            yield loop
            await bounded(loop.close)
    finally:
        await bounded(lambda: tombstone(kafka, DEPLOYMENTS.name, [model]))


@contextlib.asynccontextmanager
async def running_loop(
    kafka_bootstrap: str, tmp_path: Path, *, start_retrain: bool = True, **retrain_fields: Any
) -> AsyncIterator[Loop]:
    """Services of the test's own, and its model on them."""
    async with (
        running_services(
            kafka_bootstrap, tmp_path, start_retrain=start_retrain, **retrain_fields
        ) as services,
        loop_on(services, tmp_path) as loop,
    ):
        yield loop


@pytest.fixture(scope="module")
async def services(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Services]:
    """A registry, a deployer and a retrain trigger shared by a module's tests: each test
    has a model of its own, and everything it looks at is that model's."""
    async with running_services(kafka_bootstrap, tmp_path_factory.mktemp("retrain")) as running:
        yield running


@pytest.fixture
async def loop(services: Services, tmp_path: Path) -> AsyncIterator[Loop]:
    async with loop_on(services, tmp_path) as running:
        yield running
