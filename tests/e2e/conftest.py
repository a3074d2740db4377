"""All five services in this process on real Kafka, as `make run` starts them."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from flywheel_cli.connection import Addresses

from flywheel_common.settings import GrpcSettings, KafkaSettings, TelemetrySettings
from flywheel_common.topics import DEPLOYMENTS
from flywheel_deployer.app import build as build_deployer
from flywheel_deployer.settings import DeployerSettings
from flywheel_drift.app import build as build_drift
from flywheel_drift.settings import DriftSettings
from flywheel_gateway.app import build as build_gateway
from flywheel_gateway.settings import GatewaySettings
from flywheel_registry.app import build as build_registry
from flywheel_registry.settings import RegistrySettings
from flywheel_retrain.app import build as build_retrain
from flywheel_retrain.settings import RetrainSettings
from flywheel_testing.kafka import tombstone
from flywheel_testing.waiting import bounded

TELEMETRY = TelemetrySettings(metrics_port=-1, log_level="WARNING")


@pytest.fixture
async def platform(
    kafka_bootstrap: str, tmp_path: Path, deployed_models: list[str]
) -> AsyncIterator[Addresses]:
    """The services' addresses. `deployed_models` (a fixture of the test module) names the
    models the test deploys: the shared routing topic forgets them before and after, so no
    earlier run's routing state (a higher generation) is applied instead of this one's."""
    models = deployed_models
    await tombstone(kafka_bootstrap, DEPLOYMENTS.name, models)
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    suffix = uuid.uuid4().hex[:8]
    common = {"grpc": GrpcSettings(port=0), "kafka": kafka, "telemetry": TELEMETRY}
    async with contextlib.AsyncExitStack() as stack:
        registry = build_registry(
            RegistrySettings(
                **common, data_dir=tmp_path / "registry", consumer_group=f"registry-{suffix}"
            )
        )
        await registry.start()
        stack.push_async_callback(bounded, registry.stop)
        address = registry.grpc.address
        services = [
            build_deployer(
                DeployerSettings(
                    **common,
                    data_dir=tmp_path / "deployer",
                    registry_address=address,
                    reconcile_interval_seconds=0.2,
                    consumer_group=f"deployer-{suffix}",
                )
            ),
            build_gateway(
                GatewaySettings(
                    **common,
                    data_dir=tmp_path / "gateway",
                    registry_address=address,
                    gateway_id=f"gw-{suffix}",
                    heartbeat_seconds=0.5,
                )
            ),
            build_drift(
                DriftSettings(
                    **common,
                    data_dir=tmp_path / "drift",
                    registry_address=address,
                    batch_seconds=0.2,
                    consumer_group=f"drift-{suffix}",
                )
            ),
            build_retrain(
                RetrainSettings(
                    **common,
                    data_dir=tmp_path / "retrain",
                    registry_address=address,
                    reconcile_interval_seconds=0.2,
                    consumer_group=f"retrain-{suffix}",
                )
            ),
        ]
        for service in services:
            await service.start()
            stack.push_async_callback(bounded, service.stop)
        stack.push_async_callback(
            bounded, lambda: tombstone(kafka_bootstrap, DEPLOYMENTS.name, models)
        )
        deployer, gateway, drift, retrain = services
        yield Addresses(
            registry=address,
            deployer=deployer.grpc.address,
            gateway=gateway.grpc.address,
            drift=drift.grpc.address,
            retrain=retrain.grpc.address,
            kafka=kafka_bootstrap,
        )
