"""All five services in this process on real Kafka, as `make run` starts them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from flywheel_cli.connection import Addresses

from flywheel_testing.platform import in_process
from flywheel_testing.tls import pki


@pytest.fixture
async def platform(
    kafka_bootstrap: str, tmp_path: Path, deployed_models: list[str]
) -> AsyncIterator[Addresses]:
    """The services' addresses. `deployed_models` (a fixture of the test module) names the
    models the test deploys: the shared routing topic forgets them before and after, so no
    earlier run's routing state (a higher generation) is applied instead of this one's."""
    async with in_process(kafka_bootstrap, tmp_path) as services:
        await services.forget_deployments(deployed_models)
        registry = await services.registry()
        deployer = await services.deployer()
        gateway = await services.gateway()
        drift = await services.drift()
        retrain = await services.retrain()
        yield Addresses(
            registry=registry.grpc.address,
            deployer=deployer.grpc.address,
            gateway=gateway.grpc.address,
            drift=drift.grpc.address,
            retrain=retrain.grpc.address,
            kafka=kafka_bootstrap,
            tls=pki().client_tls(),
        )
