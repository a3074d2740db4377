"""Inference scoped per model over real gRPC: a gateway with JWTs from a JWKS served over
HTTP and scoped static tokens, pulling artifacts with a registry token of its own.

The module's tests share the platform and its two deployed models: they only call them, and
a test that deploys one more names it its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from flywheel.registry.v1 import registry_pb2_grpc as registry_grpc
from flywheel_common.registration import registration
from flywheel_common.settings import AuthSettings, JwtSettings, Role, StaticToken
from flywheel_gateway.app import build as build_gateway
from flywheel_gateway.settings import GatewaySettings
from flywheel_testing.identity import AUDIENCE, ISSUER, IdentityProvider, bearer, expect
from flywheel_testing.models import IrisModels
from flywheel_testing.platform import in_process
from flywheel_testing.tls import secure_channel
from flywheel_testing.waiting import bounded
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

from .conftest import Platform
from .test_gateway_state import typed_request

REGISTRY_ADMIN = "registry-admin-token"
GATEWAY_TO_REGISTRY = "gateway-reads-models"
ROWS = np.array([[5.1, 3.5, 1.4, 0.2]], dtype=np.float32)


@pytest.fixture(scope="module")
def models() -> tuple[str, str]:
    run = uuid.uuid4().hex[:8]
    return f"team-a-{run}-iris", f"team-b-{run}-iris"


@pytest.fixture(scope="module")
def provider() -> IdentityProvider:
    return IdentityProvider()


@pytest.fixture(scope="module")
async def platform(
    kafka_bootstrap: str,
    tmp_path_factory: pytest.TempPathFactory,
    provider: IdentityProvider,
    iris_models: IrisModels,
    models: tuple[str, str],
) -> AsyncIterator[Platform]:
    with provider.serving_jwks() as jwks_url:
        data_dir = tmp_path_factory.mktemp("authorization")
        async with in_process(kafka_bootstrap, data_dir) as services:
            registry = await services.registry(
                auth=AuthSettings(
                    tokens={
                        REGISTRY_ADMIN: Role.ADMIN,
                        GATEWAY_TO_REGISTRY: StaticToken(
                            role=Role.READER, models=["team-*"], subject="gateway"
                        ),
                    }
                )
            )
            settings = services.settings(
                GatewaySettings,
                "gateway",
                registry_token=GATEWAY_TO_REGISTRY,
                auth=AuthSettings(
                    jwt=JwtSettings(jwks_url=jwks_url, issuer=ISSUER, audience=AUDIENCE),
                    tokens={
                        "team-b-app": StaticToken(role=Role.READER, models=[models[1]]),
                    },
                ),
            )
            gateway = await services.start(build_gateway(settings))
            publisher = await services.publisher("flywheel-deployer")
            platform = Platform(registry, gateway, publisher, settings)
            async with secure_channel(registry.grpc.address) as channel:
                stub = registry_grpc.RegistryServiceStub(channel)
                for model in models:
                    await stub.RegisterModelVersion(
                        iter(registration(model, iris_models.classifier)),
                        metadata=(("authorization", f"Bearer {REGISTRY_ADMIN}"),),
                    )
            for generation, model in enumerate(models, start=1):
                await platform.deploy(model, {1: 100}, generation)  # loaded with the token
            yield platform
            await bounded(platform.forget_deployments)


async def test_a_token_scoped_to_model_a_infers_on_a_only(
    platform: Platform, provider: IdentityProvider, models: tuple[str, str]
) -> None:
    a, b = models
    token = provider.token(["reader:team-a-*"], subject="app-a", kid="ec-1", algorithm="ES256")
    async with secure_channel(platform.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        answer = await stub.ModelInfer(typed_request(a, ROWS), metadata=bearer(token))
        assert answer.model_name == a
        ready = await stub.ModelReady(pb.ModelReadyRequest(name=a), metadata=bearer(token))
        assert ready.ready
        metadata = await stub.ModelMetadata(pb.ModelMetadataRequest(name=a), metadata=bearer(token))
        assert metadata.name == a
        assert (await stub.ServerLive(pb.ServerLiveRequest(), metadata=bearer(token))).live

        denied = grpc.StatusCode.PERMISSION_DENIED
        await expect(
            stub.ModelInfer(typed_request(b, ROWS), metadata=bearer(token)),
            denied,
            f"ModelInfer needs role reader on model {b!r}; jwt:app-a holds reader:team-a-*",
        )
        await expect(stub.ModelReady(pb.ModelReadyRequest(name=b), metadata=bearer(token)), denied)
        await expect(
            stub.ModelMetadata(pb.ModelMetadataRequest(name=b), metadata=bearer(token)), denied
        )
        # The static token of team b: the other way round.
        team_b = bearer("team-b-app")
        assert (await stub.ModelInfer(typed_request(b, ROWS), metadata=team_b)).model_name == b
        await expect(stub.ModelInfer(typed_request(a, ROWS), metadata=team_b), denied)


async def test_expired_wrong_audience_and_missing_credentials_are_unauthenticated(
    platform: Platform, provider: IdentityProvider, models: tuple[str, str]
) -> None:
    a = models[0]
    refused = grpc.StatusCode.UNAUTHENTICATED
    async with secure_channel(platform.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for metadata, fragment in [
            (bearer(provider.token(["reader"], expires_in=-300)), "the JWT has expired"),
            (bearer(provider.token(["reader"], audience="billing")), "audience is not"),
            ((), "send 'authorization: Bearer <token>'"),
            (bearer("guess"), "the bearer token is not valid"),
        ]:
            await expect(
                stub.ModelInfer(typed_request(a, ROWS), metadata=metadata), refused, fragment
            )
    assert provider.served == 1  # the JWKS was read once, for the first JWT


async def test_a_model_the_gateway_may_not_pull_is_a_failed_precondition_not_a_retry(
    platform: Platform, provider: IdentityProvider, iris: IrisModels
) -> None:
    """The registry refuses the gateway's token for a model outside its scope: requests are
    told what to fix, not UNAVAILABLE, which clients would retry forever."""
    other = f"other-{uuid.uuid4().hex[:8]}-iris"
    async with secure_channel(platform.registry.grpc.address) as channel:
        await registry_grpc.RegistryServiceStub(channel).RegisterModelVersion(
            iter(registration(other, iris.classifier)), metadata=bearer(REGISTRY_ADMIN)
        )
    await platform.deploy(other, {1: 100}, 1)
    operator = bearer(provider.token(["reader"], subject="ops"))
    async with secure_channel(platform.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        for call in (
            stub.ModelInfer(typed_request(other, ROWS), metadata=operator),
            stub.ModelMetadata(pb.ModelMetadataRequest(name=other), metadata=operator),
        ):
            await expect(
                call,
                grpc.StatusCode.FAILED_PRECONDITION,
                "the registry refused this service's registry token",
            )
