"""A real registry, deployer and two gateways, on real Kafka, serving iris models: a test's
own (`platform`), or shared by a module's tests (`shared_services`), each test with a model
of its own."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from flywheel.deployer.v1 import deployer_pb2 as deployer_pb
from flywheel.deployer.v1 import deployer_pb2_grpc as deployer_grpc
from flywheel.deployer.v1 import types_pb2 as types
from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel.drift.v1 import types_pb2 as drift_types
from flywheel.registry.v1 import registry_pb2 as registry_pb
from flywheel.registry.v1 import registry_pb2_grpc as registry_grpc
from flywheel_common.publisher import EventPublisher
from flywheel_common.registration import registration
from flywheel_common.service import Service
from flywheel_common.settings import DatabaseSettings, KafkaSettings
from flywheel_common.timestamps import timestamp
from flywheel_common.topics import DEPLOYMENT_EVENTS, DEPLOYMENTS, MODEL_METRICS
from flywheel_deployer.app import build as build_deployer
from flywheel_deployer.settings import DeployerSettings
from flywheel_testing.backends import reset_postgres
from flywheel_testing.kafka import collected_events, tombstone
from flywheel_testing.models import IrisModels
from flywheel_testing.platform import in_process
from flywheel_testing.tls import secure_channel
from flywheel_testing.waiting import bounded, eventually
from inference import grpc_service_pb2 as inference_pb
from inference import grpc_service_pb2_grpc as inference_grpc


@dataclass
class Traffic:
    """Batch-1 ModelInfer calls against every gateway, round robin, until stopped."""

    addresses: list[str]
    model: str
    rows: np.ndarray
    served: Counter[int] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self, concurrency: int = 4) -> None:
        channels = [secure_channel(address) for address in self.addresses]
        stubs = [inference_grpc.GRPCInferenceServiceStub(channel) for channel in channels]

        async def worker(offset: int) -> None:
            index = offset
            while not self._stop.is_set():
                await self.infer(stubs[index % len(stubs)], index)
                index += concurrency

        try:
            await asyncio.gather(*(worker(i) for i in range(concurrency)))
        finally:
            for channel in channels:
                await channel.close()

    async def infer(self, stub: Any, index: int, key: str = "") -> int:
        row = self.rows[index % len(self.rows)][None, :]
        request = inference_pb.ModelInferRequest(
            model_name=self.model,
            inputs=[
                inference_pb.ModelInferRequest.InferInputTensor(
                    name="features", datatype="FP32", shape=list(row.shape)
                )
            ],
            raw_input_contents=[row.astype(np.float32).tobytes()],
        )
        if key:
            request.parameters["user"].string_param = key
        try:
            response = await stub.ModelInfer(request)
        except grpc.aio.AioRpcError as error:
            self.failures.append(f"{error.code().name}: {error.details()}")
            return 0
        version = int(response.model_version)
        self.served[version] += 1
        return version

    def stop(self) -> None:
        self._stop.set()


@dataclass
class Platform:
    model: str
    iris: IrisModels
    registry: Service
    deployer: Service
    gateways: list[Service]
    publisher: EventPublisher
    kafka_bootstrap: str
    events: list[Any] = field(default_factory=list)
    deployer_settings: DeployerSettings | None = None
    _channels: list[grpc.aio.Channel] = field(default_factory=list)

    def _channel(self, address: str) -> grpc.aio.Channel:
        channel = secure_channel(address)
        self._channels.append(channel)
        return channel

    deployer_address: str = ""

    @property
    def api(self) -> Any:
        address = self.deployer_address or self.deployer.grpc.address
        return deployer_grpc.DeployerServiceStub(self._channel(address))

    @property
    def registry_api(self) -> Any:
        return registry_grpc.RegistryServiceStub(self._channel(self.registry.grpc.address))

    def traffic(self) -> Traffic:
        return Traffic([g.grpc.address for g in self.gateways], self.model, self.iris.features)

    async def register(self, artifact: bytes) -> int:
        messages = registration(self.model, artifact, chunk=1 << 20, breaking_change=True)
        response = await self.registry_api.RegisterModelVersion(iter(messages))
        return int(response.model_version.version)

    async def promote(self, version: int) -> None:
        await self.registry_api.SetAlias(
            registry_pb.SetAliasRequest(
                model=self.model, alias="production", version=version, reason="test promotion"
            )
        )

    async def production(self) -> int:
        response = await self.registry_api.GetModelVersionByAlias(
            registry_pb.GetModelVersionByAliasRequest(model=self.model, alias="production")
        )
        return int(response.model_version.version)

    async def rollout(self, rollout_id: str) -> Any:
        response = await self.api.GetRollout(deployer_pb.GetRolloutRequest(rollout_id=rollout_id))
        return response.rollout

    async def wait_phase(self, rollout_id: str, phase: int, timeout: float = 60.0) -> Any:
        async def reached() -> bool:
            return bool((await self.rollout(rollout_id)).phase == phase)

        await eventually(reached, timeout)
        return await self.rollout(rollout_id)

    async def deploy_first(self, version: int) -> None:
        """Serve a first version directly and wait until both gateways route to it."""
        response = await self.api.StartRollout(
            deployer_pb.StartRolloutRequest(
                model=self.model, version=version, strategy=types.STRATEGY_DIRECT
            )
        )
        await self.wait_phase(response.rollout.rollout_id, types.ROLLOUT_PHASE_SUCCEEDED)
        await self.wait_serving({version})

    async def wait_serving(self, versions: set[int], timeout: float = 60.0) -> None:
        """Until a probe through each gateway returns only `versions`."""
        probe = self.traffic()
        channels = [secure_channel(g.grpc.address) for g in self.gateways]
        try:
            stubs = [inference_grpc.GRPCInferenceServiceStub(c) for c in channels]

            async def settled() -> bool:
                seen = {await probe.infer(stub, n) for stub in stubs for n in range(20)}
                return seen <= versions and 0 not in seen

            await eventually(settled, timeout)
        finally:
            for channel in channels:
                await channel.close()

    async def publish_window(
        self,
        version: int,
        requests: int,
        errors: int = 0,
        p99_ms: float = 10.0,
        outputs: dict[str, int] | None = None,
        labeled: int = 0,
        accuracy: float | None = None,
    ) -> None:
        """A ModelMetricsWindow as the drift detector would publish it, for the step now."""
        started = datetime.now(UTC)
        window = drift_events.ModelMetricsWindow(
            model=self.model,
            version=version,
            window=drift_types.WindowRef(
                window_id=f"{self.model}-{version}-{uuid.uuid4().hex[:8]}",
                kind=drift_types.WINDOW_KIND_COUNT,
                start=timestamp(started),
                end=timestamp(started),
            ),
            request_count=requests,
            error_count=errors,
            latency=drift_types.LatencyQuantiles(p99_ms=p99_ms),
            emitted_at=timestamp(started),
        )
        if accuracy is not None:
            window.label_metrics.labeled_count = labeled
            window.label_metrics.accuracy = accuracy
        if outputs:
            histogram = window.output_histograms.add(output="label")
            histogram.histogram.categories.extend(outputs)
            histogram.histogram.counts.extend(outputs.values())
        await self.publisher.publish(MODEL_METRICS, window, subject=self.model)

    def of_type(self, name: str) -> list[Any]:
        return [e for e in self.events if type(e).__name__ == name]

    async def close(self) -> None:
        for channel in self._channels:
            await channel.close()


@dataclass
class Services:
    """A registry, two gateways and a deployer, each model's state in them its own."""

    registry: Service
    gateways: list[Service]
    deployer: Service
    deployer_settings: DeployerSettings
    publisher: EventPublisher
    kafka: KafkaSettings


@contextlib.asynccontextmanager
async def running_services(
    kafka_bootstrap: str, data_dir: Path, deployer_database: DatabaseSettings
) -> AsyncIterator[Services]:
    async with in_process(kafka_bootstrap, data_dir) as services:
        registry = await services.registry()
        gateways = [
            await services.gateway(f"gateway-{name}", log_predictions=False) for name in "ab"
        ]
        settings = services.settings(DeployerSettings, "deployer", database=deployer_database)
        deployer = await services.start(build_deployer(settings))
        publisher = await services.publisher("flywheel-drift")
        yield Services(registry, gateways, deployer, settings, publisher, services.kafka)


@contextlib.asynccontextmanager
async def platform_on(
    services: Services, iris: IrisModels, kafka_bootstrap: str
) -> AsyncIterator[Platform]:
    """A model of the test's own on `services`, its deployment events collected. The shared
    routing topic forgets the model before and after, so no other run's state applies."""
    model = f"iris-{uuid.uuid4().hex[:8]}"
    await tombstone(services.kafka, DEPLOYMENTS.name, [model])
    try:
        async with collected_events(services.kafka, DEPLOYMENT_EVENTS, model) as events:
            platform = Platform(
                model,
                iris,
                services.registry,
                services.deployer,
                services.gateways,
                services.publisher,
                kafka_bootstrap,
                events,
            )
            platform.deployer_settings = services.deployer_settings
            yield platform
            await bounded(platform.close)
    finally:
        await bounded(lambda: tombstone(services.kafka, DEPLOYMENTS.name, [model]))


@pytest.fixture
async def platform(
    kafka_bootstrap: str,
    tmp_path: Path,
    iris_models: IrisModels,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Platform]:
    """Services of the test's own. Parametrize indirectly with "postgresql" to keep the
    deployer's state there."""
    deployer_database = DatabaseSettings()
    if getattr(request, "param", "sqlite") == "postgresql":
        url = str(request.getfixturevalue("postgres_url"))
        await reset_postgres(url)
        deployer_database = DatabaseSettings(url=url)
    async with (
        running_services(kafka_bootstrap, tmp_path, deployer_database) as services,
        platform_on(services, iris_models, kafka_bootstrap) as platform,
    ):
        yield platform


@pytest.fixture(scope="module")
async def shared_services(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Services]:
    """Services shared by a module's tests (the deployer on SQLite)."""
    data_dir = tmp_path_factory.mktemp("deployer")
    async with running_services(kafka_bootstrap, data_dir, DatabaseSettings()) as services:
        yield services
