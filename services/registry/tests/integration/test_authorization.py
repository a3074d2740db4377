"""Identities and per-model grants on a real registry: static tokens scoped to a model,
JWTs from a JWKS (file or URL), protected aliases, and every refusal counted."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from flywheel.registry.v1 import registry_pb2 as pb
from flywheel.registry.v1 import registry_pb2_grpc as pb_grpc
from flywheel_common import registry_client
from flywheel_common.errors import FailedPrecondition
from flywheel_common.registration import registration
from flywheel_common.settings import (
    AuthSettings,
    JwtSettings,
    Role,
    StaticToken,
    TelemetrySettings,
)
from flywheel_registry.app import build
from flywheel_testing.backends import unused_port
from flywheel_testing.identity import AUDIENCE, ISSUER, IdentityProvider
from flywheel_testing.models import IrisModels
from flywheel_testing.processes import service_process
from flywheel_testing.tls import grpc_settings, pki, secure_channel

from .conftest import RegistryClient, drain, expect_error, register, registry_settings


@dataclass(frozen=True)
class Teams:
    """Two teams' models: `a` (the caller's) and `b` (another team's)."""

    a: str
    b: str


@pytest.fixture
def teams() -> Teams:
    run = uuid.uuid4().hex[:8]
    return Teams(f"team-a-{run}-fraud", f"team-b-{run}-churn")


@pytest.fixture(scope="module")
def provider() -> IdentityProvider:
    return IdentityProvider()


def auth_settings(teams: Teams, jwt: JwtSettings) -> AuthSettings:
    return AuthSettings(
        tokens={
            "admin-token": Role.ADMIN,
            "team-a-token": StaticToken(
                role=Role.WRITER, models=[teams.a.rsplit("-", 1)[0] + "-*"], subject="team-a-ci"
            ),
        },
        jwt=jwt,
    )


@dataclass
class Registry:
    channel: grpc.aio.Channel
    address: str

    def as_(self, token: str) -> RegistryClient:
        return RegistryClient(pb_grpc.RegistryServiceStub(self.channel), token)


@pytest.fixture
async def registry(
    registry_database_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
    teams: Teams,
    provider: IdentityProvider,
    iris: IrisModels,
) -> AsyncIterator[Registry]:
    jwks = JwtSettings(
        jwks_file=str(provider.write_jwks(tmp_path / "jwks.json")),
        issuer=ISSUER,
        audience=AUDIENCE,
    )
    settings = registry_settings(
        registry_database_url, kafka_bootstrap, tmp_path, auth=auth_settings(teams, jwks)
    )
    service = build(settings)
    await service.start()
    async with secure_channel(service.grpc.address) as channel:
        admin = Registry(channel, service.grpc.address).as_("admin-token")
        for model in (teams.a, teams.b):
            await register(admin, registration(model, iris.classifier))
        yield Registry(channel, service.grpc.address)
    await service.stop()


async def test_a_token_scoped_to_team_a_acts_on_its_models_and_not_on_team_b(
    registry: Registry, teams: Teams, iris: IrisModels
) -> None:
    team_a = registry.as_("team-a-token")
    a, b = teams.a, teams.b
    registered = await register(team_a, registration(a, iris.retrained))
    assert registered.model_version.version == 2
    assert registered.model_version.created_by == "team-a-ci"
    await team_a.SetAlias(pb.SetAliasRequest(model=a, alias="production", version=2))
    assert (await team_a.GetModel(pb.GetModelRequest(name=a))).model.latest_version == 2
    assert await drain(team_a.GetArtifact(pb.GetArtifactRequest(model=a, version=2)))

    denied = grpc.StatusCode.PERMISSION_DENIED
    await expect_error(
        register(team_a, registration(b, iris.retrained)),
        denied,
        f"RegisterModelVersion needs role writer on model {b!r}; team-a-ci holds writer:",
    )
    await expect_error(
        team_a.SetAlias(pb.SetAliasRequest(model=b, alias="production", version=1)),
        denied,
        f"SetAlias needs role writer on model {b!r}",
    )
    await expect_error(team_a.GetModel(pb.GetModelRequest(name=b)), denied, repr(b))
    await expect_error(
        team_a.GetModelVersion(pb.GetModelVersionRequest(model=b, version=1)), denied
    )
    await expect_error(drain(team_a.GetArtifact(pb.GetArtifactRequest(model=b, version=1))), denied)
    await expect_error(
        team_a.SearchModelVersions(pb.SearchModelVersionsRequest(models=[b])), denied
    )

    admin = registry.as_("admin-token")
    untouched = await admin.GetModel(pb.GetModelRequest(name=b))
    assert untouched.model.latest_version == 1  # the refused registration left nothing
    assert not untouched.model.aliases
    listed = await team_a.ListModels(pb.ListModelsRequest(page_size=500))
    names = {model.name for model in listed.models}
    assert a in names
    assert b not in names  # listings answer with the caller's models only
    found = await team_a.SearchModelVersions(pb.SearchModelVersionsRequest(page_size=500))
    assert {version.model for version in found.model_versions} == {a}
    everything = await admin.SearchModelVersions(pb.SearchModelVersionsRequest(page_size=500))
    assert {a, b} <= {version.model for version in everything.model_versions}


async def test_jwt_grants_scope_the_caller_and_bad_jwts_are_unauthenticated(
    registry: Registry, teams: Teams, provider: IdentityProvider
) -> None:
    a, b = teams.a, teams.b
    scoped = registry.as_(provider.token([f"writer:{a}", "offline_access"], subject="dana"))
    moved = await scoped.SetAlias(pb.SetAliasRequest(model=a, alias="staging", version=1))
    assert moved.alias.updated_by == "jwt:dana"
    await expect_error(
        scoped.SetAlias(pb.SetAliasRequest(model=b, alias="staging", version=1)),
        grpc.StatusCode.PERMISSION_DENIED,
        f"on model {b!r}; jwt:dana holds writer:{a}",
    )
    refused = grpc.StatusCode.UNAUTHENTICATED
    for token, fragment in [
        (provider.token([f"writer:{a}"], expires_in=-600), "the JWT has expired"),
        (provider.token([f"writer:{a}"], audience="another-app"), "audience is not 'flywheel'"),
        (provider.token([f"writer:{a}"], issuer="https://elsewhere"), "issuer is not"),
        (IdentityProvider(generation=7).token([f"writer:{a}"]), "'rsa-7' is not in"),
    ]:
        await expect_error(
            registry.as_(token).GetModel(pb.GetModelRequest(name=a)), refused, fragment
        )
    nothing = registry.as_(provider.token(["offline_access"]))
    await expect_error(
        nothing.GetModel(pb.GetModelRequest(name=a)),
        grpc.StatusCode.PERMISSION_DENIED,
        "GetModel needs role reader on some model; jwt:alice holds no grants",
    )


async def test_protected_aliases_need_admin_on_that_model(
    registry: Registry, teams: Teams, provider: IdentityProvider
) -> None:
    a, b = teams.a, teams.b
    admin_of_a = registry.as_(provider.token([f"admin:{a}", "writer"], subject="lead-a"))
    made = await admin_of_a.SetAlias(
        pb.SetAliasRequest(model=a, alias="production", version=1, protected=True)
    )
    assert made.alias.protected
    await registry.as_("admin-token").SetAlias(
        pb.SetAliasRequest(model=b, alias="production", version=1, protected=True)
    )
    await expect_error(  # writer on every model, admin of a only
        admin_of_a.DeleteAlias(pb.DeleteAliasRequest(model=b, alias="production")),
        grpc.StatusCode.PERMISSION_DENIED,
        "only the admin role deletes it",
    )
    await expect_error(
        registry.as_("team-a-token").DeleteAlias(
            pb.DeleteAliasRequest(model=a, alias="production")
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "only the admin role deletes it",
    )
    await admin_of_a.DeleteAlias(pb.DeleteAliasRequest(model=a, alias="production"))


async def test_the_retrain_triggers_least_privilege_identity_promotes_its_models_only(
    registry: Registry, teams: Teams, iris: IrisModels
) -> None:
    """The retrain trigger's registry token: writer on its models (README, Security)."""
    a, b = teams.a, teams.b
    trigger = registry_client.RegistryClient(registry.address, pki().client_tls(), "team-a-token")
    try:
        await register(registry.as_("team-a-token"), registration(a, iris.retrained))
        await trigger.set_alias(a, "production", 2, "retrain run r1: gate passed")
        assert (await trigger.alias_version(a, "production")) is not None
        with pytest.raises(FailedPrecondition, match="refused to move 'production'"):
            await trigger.set_alias(b, "production", 1, "retrain run r2")
        await registry.as_("admin-token").SetAlias(
            pb.SetAliasRequest(model=a, alias="production", version=1, protected=True)
        )
        with pytest.raises(FailedPrecondition, match="only the admin role moves it"):
            await trigger.set_alias(a, "production", 2, "retrain run r3")
    finally:
        await trigger.stop()


def denials(metrics_text: str) -> dict[tuple[str, str, str], float]:
    """flywheel_auth_denied_total by (method, code, reason), from Prometheus text."""
    found: dict[tuple[str, str, str], float] = {}
    for line in metrics_text.splitlines():
        if not line.startswith("flywheel_auth_denied_total{"):
            continue
        labels_text, _, value = line[len("flywheel_auth_denied_total{") :].rpartition("} ")
        labels = dict(
            part.split("=", 1) for part in labels_text.replace('"', "").split(",") if "=" in part
        )
        key = (labels["rpc_method"].rpartition("/")[2], labels["code"], labels["reason"])
        found[key] = float(value)
    return found


async def test_refusals_are_counted_and_logged_without_credentials(
    registry_database_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
    teams: Teams,
    iris: IrisModels,
) -> None:
    provider = IdentityProvider()
    metrics_port = unused_port()
    log_file = tmp_path / "registry.log"
    with provider.serving_jwks() as jwks_url:
        settings = registry_settings(
            registry_database_url,
            kafka_bootstrap,
            tmp_path,
            auth=auth_settings(
                teams, JwtSettings(jwks_url=jwks_url, issuer=ISSUER, audience=AUDIENCE)
            ),
        ).model_copy(
            update={
                "grpc": grpc_settings(port=unused_port()),
                "telemetry": TelemetrySettings(metrics_port=metrics_port),
            }
        )
        process = await service_process("flywheel_registry", settings, log_file=log_file)
        expired = provider.token(["admin"], expires_in=-600)
        try:
            async with secure_channel(f"127.0.0.1:{settings.grpc.port}") as channel:
                stub = pb_grpc.RegistryServiceStub(channel)
                admin = RegistryClient(stub, provider.token(["admin"]))
                await register(admin, registration(teams.b, iris.classifier))
                await expect_error(
                    stub.GetModel(pb.GetModelRequest(name=teams.b)),
                    grpc.StatusCode.UNAUTHENTICATED,
                )
                await expect_error(
                    RegistryClient(stub, expired).GetModel(pb.GetModelRequest(name=teams.b)),
                    grpc.StatusCode.UNAUTHENTICATED,
                )
                team_a = RegistryClient(stub, "team-a-token")
                for _ in range(2):
                    await expect_error(
                        team_a.GetModel(pb.GetModelRequest(name=teams.b)),
                        grpc.StatusCode.PERMISSION_DENIED,
                    )
                metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
                scrape = await asyncio.to_thread(
                    lambda: urllib.request.urlopen(metrics_url, timeout=5).read()
                )
                counted = denials(scrape.decode())
        finally:
            process.terminate()
            await process.wait()
    assert counted == {
        ("GetModel", "UNAUTHENTICATED", "missing_credentials"): 1,
        ("GetModel", "UNAUTHENTICATED", "expired"): 1,
        ("GetModel", "PERMISSION_DENIED", "model_not_granted"): 2,
    }
    assert provider.served == 1  # one JWKS read served every JWT
    log = log_file.read_text()
    assert '"decision": "deny"' in log
    assert '"subject": "team-a-ci"' in log
    assert f'"model": "{teams.b}"' in log
    assert "team-a-token" not in log
    assert expired.split(".")[1] not in log  # no JWT, not even its claims part
