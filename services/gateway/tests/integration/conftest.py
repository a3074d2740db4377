"""A real registry and a real gateway on real Kafka, with models trained here: shared by a
module's tests (`platform`), or a test's own when it needs gateway settings of its own or
stops what it runs on (`own_platform`, parametrized indirectly with those settings).

A test on the shared services serves models of its own (`model_name`), and the routing of
each model it deployed is deleted when it ends, so no test sees another's state."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from flywheel.common.v1 import types_pb2 as common
from flywheel.deployer.v1 import events_pb2 as deployer_events
from flywheel.deployer.v1 import types_pb2 as deployer_types
from flywheel.registry.v1 import registry_pb2_grpc as registry_grpc
from flywheel_common.publisher import EventPublisher
from flywheel_common.registration import registration
from flywheel_common.service import Service
from flywheel_common.topics import DEPLOYMENTS
from flywheel_gateway.app import build as build_gateway
from flywheel_gateway.http_api import RestApi
from flywheel_gateway.settings import GatewaySettings
from flywheel_testing.kafka import tombstone
from flywheel_testing.models import IrisModels
from flywheel_testing.platform import in_process
from flywheel_testing.tls import pki, secure_channel
from flywheel_testing.waiting import bounded

DRIVER = Path(__file__).with_name("triton_driver.py")


@dataclass
class Platform:
    registry: Service
    gateway: Service
    publisher: EventPublisher
    settings: GatewaySettings
    deployed: set[str] = field(default_factory=set)

    async def forget_deployments(self) -> None:
        """Tombstone this test's models so later gateways do not try to load them."""
        await tombstone(
            self.settings.kafka.bootstrap_servers, DEPLOYMENTS.name, list(self.deployed)
        )

    @property
    def address(self) -> str:
        return self.gateway.grpc.address

    def address_of(self, protocol: str) -> str:
        """Where tritonclient's `protocol` (grpc or http) finds the gateway."""
        if protocol == "grpc":
            return self.address
        rest = next(c for c in self.gateway.components if isinstance(c, RestApi))
        return f"127.0.0.1:{rest.port}"

    async def register(self, model: str, artifact: bytes) -> int:
        async with secure_channel(self.registry.grpc.address) as channel:
            stub = registry_grpc.RegistryServiceStub(channel)
            messages = registration(model, artifact, chunk=1 << 20, breaking_change=True)
            response = await stub.RegisterModelVersion(iter(messages))
        return int(response.model_version.version)

    async def deploy(
        self,
        model: str,
        weights: dict[int, int],
        generation: int,
        sticky_key: str = "",
        shadow: int = 0,
    ) -> None:
        """Publish a desired state the way the deployer does, and wait until it is applied."""
        state = deployer_events.DeploymentState(
            model=model,
            routes=[
                deployer_types.TrafficRoute(
                    version=version, weight_percent=weight, role=common.TRAFFIC_ROLE_STABLE
                )
                for version, weight in weights.items()
            ],
            strategy=deployer_types.STRATEGY_DIRECT,
            sticky_key=sticky_key,
            generation=generation,
        )
        if shadow:
            state.shadow.version = shadow
            state.shadow.mirror_percent = 100
        await self.publisher.publish(DEPLOYMENTS, state, subject=model)
        self.deployed.add(model)
        follower = self.gateway_follower
        async with asyncio.timeout(30):
            while follower.applied_generations.get(model) != generation:
                await asyncio.sleep(0.02)

    @property
    def gateway_follower(self) -> Any:
        reporter = next(c for c in self.gateway.components if type(c).__name__ == "StatusReporter")
        return reporter._follower


async def drive(address: str, scenario: str, protocol: str = "grpc", **arguments: Any) -> Any:
    """Run the stock tritonclient in its own process (its protobuf names clash with ours):
    tritonclient.grpc at a gRPC address, or tritonclient.http at a REST one."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(DRIVER),
        address,
        scenario,
        json.dumps(arguments),
        str(pki().ca_file),
        protocol,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, stderr.decode()[-3000:]
    return json.loads(stdout)


@contextlib.asynccontextmanager
async def running_platform(
    kafka_bootstrap: str, data_dir: Path, **gateway_fields: Any
) -> AsyncIterator[Platform]:
    async with in_process(kafka_bootstrap, data_dir) as services:
        registry = await services.registry()
        settings = services.settings(
            GatewaySettings, "gateway", heartbeat_seconds=1.0, **gateway_fields
        )
        gateway = await services.start(build_gateway(settings))
        publisher = await services.publisher("flywheel-deployer")
        yield Platform(registry, gateway, publisher, settings)


@pytest.fixture(scope="module")
async def shared_platform(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Platform]:
    async with running_platform(kafka_bootstrap, tmp_path_factory.mktemp("gateway")) as platform:
        yield platform


@pytest.fixture
async def platform(shared_platform: Platform) -> AsyncIterator[Platform]:
    """The module's registry and gateway, with the test's own record of what it deployed."""
    platform = dataclasses.replace(shared_platform, deployed=set())
    yield platform
    await bounded(platform.forget_deployments)


@pytest.fixture
async def own_platform(
    kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Platform]:
    """A registry and gateway of the test's own, with the gateway settings it is
    parametrized with."""
    gateway_fields = getattr(request, "param", {})
    async with running_platform(kafka_bootstrap, tmp_path, **gateway_fields) as platform:
        yield platform
        await bounded(platform.forget_deployments)


@pytest.fixture
def model_name() -> str:
    return f"iris-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def iris(iris_models: IrisModels) -> IrisModels:
    return iris_models
