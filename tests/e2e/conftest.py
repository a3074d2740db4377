"""All five services in this process on real Kafka, as `make run` starts them: on the
plaintext broker, or (a test parametrizes `platform` indirectly with "secure") as production
runs them: on the SASL_SSL broker with ACLs, where each service is its own Kafka user, and
requiring JWTs from an OIDC provider, each service holding the least privilege it needs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from flywheel_cli.connection import Addresses

from flywheel_common.settings import KafkaSecurity
from flywheel_gateway.http_api import RestApi
from flywheel_testing.identity import IdentityProvider
from flywheel_testing.platform import in_process
from flywheel_testing.secure_kafka import SecureKafka
from flywheel_testing.tls import pki

GATEWAY_REST = pytest.StashKey[str]()


@pytest.fixture
async def platform(
    request: pytest.FixtureRequest, tmp_path: Path, deployed_models: list[str]
) -> AsyncIterator[Addresses]:
    """The services' addresses. `deployed_models` (a fixture of the test module) names the
    models the test deploys: the shared routing topic forgets them before and after, so no
    earlier run's routing state (a higher generation) is applied instead of this one's."""
    secure: SecureKafka | None = None
    identity: IdentityProvider | None = None
    kafka_auth = KafkaSecurity()
    token = ""
    retrain_fields: dict[str, str] = {}
    if getattr(request, "param", "plaintext") == "secure":
        secure = request.getfixturevalue("kafka_sasl_ssl")
        kafka_bootstrap = secure.bootstrap
        kafka_auth = secure.security("cli")
        identity = IdentityProvider()
        # The operator and the retrain trigger may change the test's models and no other.
        writer = [f"writer:{model}" for model in deployed_models]
        token = identity.token(writer, subject="operator")
        retrain_fields["registry_token"] = identity.token(writer, subject="retrain-trigger")
    else:
        kafka_bootstrap = request.getfixturevalue("kafka_bootstrap")
    async with in_process(kafka_bootstrap, tmp_path, secure=secure, identity=identity) as services:
        await services.forget_deployments(deployed_models)
        registry = await services.registry()
        deployer = await services.deployer()
        gateway = await services.gateway()
        rest = next(c for c in gateway.components if isinstance(c, RestApi))
        request.node.stash[GATEWAY_REST] = f"127.0.0.1:{rest.port}"
        drift = await services.drift()
        retrain = await services.retrain(**retrain_fields)
        yield Addresses(
            registry=registry.grpc.address,
            deployer=deployer.grpc.address,
            gateway=gateway.grpc.address,
            drift=drift.grpc.address,
            retrain=retrain.grpc.address,
            kafka=kafka_bootstrap,
            kafka_auth=kafka_auth,
            tls=pki().client_tls(),
            token=token,
        )


@pytest.fixture
def gateway_rest(request: pytest.FixtureRequest, platform: Addresses) -> str:
    """The gateway's KServe V2 REST address (host:port) on the platform under test."""
    return request.node.stash[GATEWAY_REST]
