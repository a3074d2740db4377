"""A real registry and a real gateway per test, on real Kafka, with models trained here."""

from __future__ import annotations

import asyncio
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


async def drive(address: str, scenario: str, **arguments: Any) -> Any:
    """Run the stock tritonclient in its own process (its protobuf names clash with ours)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(DRIVER),
        address,
        scenario,
        json.dumps(arguments),
        str(pki().ca_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, stderr.decode()[-3000:]
    return json.loads(stdout)


@pytest.fixture
async def platform(
    kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[Platform]:
    async with in_process(kafka_bootstrap, tmp_path) as services:
        registry = await services.registry()
        settings = services.settings(
            GatewaySettings, "gateway", heartbeat_seconds=1.0, **getattr(request, "param", {})
        )
        gateway = await services.start(build_gateway(settings))
        publisher = await services.publisher("flywheel-deployer")
        platform = Platform(registry, gateway, publisher, settings)
        yield platform
        await bounded(platform.forget_deployments)


@pytest.fixture
def model_name() -> str:
    return f"iris-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def iris(iris_models: IrisModels) -> IrisModels:
    return iris_models
