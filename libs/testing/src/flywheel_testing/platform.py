"""Flywheel's services run in the test's own process, on the real broker.

Each service is built by its own composition root (`build(settings)`), as `make run` builds it,
with settings for tests: a free port, its own folder under the test's directory, its own
consumer group, short intervals, and the registry started first as the one every other
service asks. Whatever a `Platform` started is stopped when its block ends, newest first,
each step bounded so a hung one fails the test by name.

On the SASL_SSL broker (`secure`) each service connects as its own user, so it can do what
infra/kafka/acls.conf grants that user and nothing else; the test's own clients are admin.
With an `identity` provider every service verifies bearer JWTs against its JWKS instead of
letting anonymous callers in, and calls the registry with a `reader` JWT of its own.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from flywheel_common.publisher import EventPublisher
from flywheel_common.service import Service
from flywheel_common.settings import (
    AuthSettings,
    JwtSettings,
    KafkaSettings,
    LeaseSettings,
    ServiceSettings,
    TelemetrySettings,
    WithConsumerGroup,
    WithDatabase,
    WithRegistry,
)
from flywheel_common.topics import DEPLOYMENTS, TopicSpec
from flywheel_deployer.app import build as build_deployer
from flywheel_deployer.settings import DeployerSettings
from flywheel_drift.app import build as build_drift
from flywheel_drift.settings import DriftSettings, ReportSettings
from flywheel_gateway.app import build as build_gateway
from flywheel_gateway.settings import GatewaySettings, HttpSettings
from flywheel_registry.app import build as build_registry
from flywheel_registry.settings import RegistrySettings
from flywheel_retrain.app import build as build_retrain
from flywheel_retrain.settings import RetrainSettings
from flywheel_testing.identity import AUDIENCE, ISSUER, IdentityProvider
from flywheel_testing.kafka import collected_events, tombstone
from flywheel_testing.secure_kafka import SecureKafka
from flywheel_testing.tls import grpc_settings, pki
from flywheel_testing.waiting import bounded

TELEMETRY = TelemetrySettings(metrics_port=-1, log_level="WARNING")
ANONYMOUS = AuthSettings(allow_anonymous=True)

# Loops tick fast in tests so that outcomes arrive in a fraction of a second.
_TEST_DEFAULTS: dict[type[ServiceSettings], dict[str, Any]] = {
    DeployerSettings: {"reconcile_interval_seconds": 0.2, "gateway_heartbeat_timeout_seconds": 5},
    GatewaySettings: {"heartbeat_seconds": 0.5, "http": HttpSettings(port=0)},
    # Reports on a free port: tests and replicas run side by side on one machine.
    DriftSettings: {"report": ReportSettings(port=0)},
    RetrainSettings: {"reconcile_interval_seconds": 0.2},
}

# A replica killed in a test hands its leader lease over within about two seconds.
TEST_LEASE = LeaseSettings(ttl_seconds=2.0, renew_seconds=0.5)

S = TypeVar("S", bound=ServiceSettings)

_KAFKA_USERS: dict[type[ServiceSettings], str] = {
    RegistrySettings: "registry",
    DeployerSettings: "deployer",
    GatewaySettings: "gateway",
    DriftSettings: "drift",
    RetrainSettings: "retrain",
}


class Platform:
    def __init__(
        self,
        kafka_bootstrap: str,
        data_dir: Path,
        stack: contextlib.AsyncExitStack,
        replication_factor: int = 1,
        secure: SecureKafka | None = None,
        identity: IdentityProvider | None = None,
    ) -> None:
        """`replication_factor`: of the topics the services create (3 on a cluster).
        `secure`: the SASL_SSL broker, instead of the plaintext one at `kafka_bootstrap`.
        `identity`: the OIDC provider whose JWTs the services require."""
        self.kafka_bootstrap = kafka_bootstrap
        self._secure = secure
        self._identity = identity
        self.kafka = self._kafka_settings("admin", replication_factor=replication_factor)
        self.data_dir = data_dir
        self._stack = stack
        self._suffix = uuid.uuid4().hex[:8]
        self._registry: Service | None = None
        self._auth = ANONYMOUS
        if identity is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
            jwks = identity.write_jwks(data_dir / f"jwks-{self._suffix}.json")
            self._auth = AuthSettings(
                jwt=JwtSettings(jwks_file=str(jwks), issuer=ISSUER, audience=AUDIENCE)
            )

    def _kafka_settings(self, user: str, **fields: Any) -> KafkaSettings:
        fields = {"linger_ms": 1, **fields}
        if self._secure is not None:
            return self._secure.settings(user, **fields)
        return KafkaSettings(bootstrap_servers=self.kafka_bootstrap, **fields)

    @property
    def registry_address(self) -> str:
        if self._registry is None:
            raise RuntimeError("start the registry first: every other service asks it")
        return self._registry.grpc.address

    def settings(self, kind: type[S], name: str, **fields: Any) -> S:
        """Settings of a service named `name` for this platform; `fields` override them."""
        values: dict[str, Any] = {
            "grpc": grpc_settings(port=0),
            # Tests that are not about authentication opt out of it explicitly.
            "auth": self._auth,
            "kafka": self._kafka_settings(
                _KAFKA_USERS.get(kind, "admin"), replication_factor=self.kafka.replication_factor
            ),
            "telemetry": TELEMETRY,
            "data_dir": self.data_dir / name,
            # A component that has not stopped in 10 s is stuck (the summary names it): a
            # test's teardown need not wait the production 20 s for it.
            "component_stop_timeout_seconds": 10.0,
            **_TEST_DEFAULTS.get(kind, {}),
        }
        if issubclass(kind, WithDatabase):
            values["lease"] = TEST_LEASE
        if issubclass(kind, WithConsumerGroup):
            group = f"{name}-test-{self._suffix}"
            if self._secure is not None:  # under the group prefix that acls.conf grants
                group = f"flywheel-{_KAFKA_USERS[kind]}-{group}"
            values["consumer_group"] = group
        if issubclass(kind, WithRegistry) and self._registry is not None:
            values["registry_address"] = self.registry_address
        if issubclass(kind, WithRegistry):
            values["registry_tls"] = pki().client_tls()
            if self._identity is not None:
                values["registry_token"] = self._identity.token(["reader"], subject=name)
        if kind is GatewaySettings:
            values["gateway_id"] = f"{name}-{self._suffix}"
        values.update(fields)
        return kind(**values)

    async def start(self, service: Service) -> Service:
        await service.start()
        self._stack.push_async_callback(bounded, service.stop)
        return service

    async def registry(self, **fields: Any) -> Service:
        settings = self.settings(RegistrySettings, "registry", **fields)
        self._registry = await self.start(build_registry(settings))
        return self._registry

    async def deployer(self, name: str = "deployer", **fields: Any) -> Service:
        return await self._service(build_deployer, DeployerSettings, name, fields)

    async def gateway(self, name: str = "gateway", **fields: Any) -> Service:
        return await self._service(build_gateway, GatewaySettings, name, fields)

    async def drift(self, name: str = "drift", **fields: Any) -> Service:
        return await self._service(build_drift, DriftSettings, name, fields)

    async def retrain(self, name: str = "retrain", **fields: Any) -> Service:
        return await self._service(build_retrain, RetrainSettings, name, fields)

    async def _service(
        self,
        build: Callable[[S], Service],
        kind: type[S],
        name: str,
        fields: dict[str, Any],
    ) -> Service:
        return await self.start(build(self.settings(kind, name, **fields)))

    async def publisher(self, source: str) -> EventPublisher:
        """A producer that publishes as `source` would (CloudEvents headers and all)."""
        publisher = EventPublisher(self.kafka, source=source)
        await publisher.start()
        self._stack.push_async_callback(bounded, publisher.stop)
        return publisher

    async def events(self, topic: TopicSpec, key: str) -> list[Any]:
        """The events published on `topic` under `key` from now until the platform stops."""
        return await self._stack.enter_async_context(collected_events(self.kafka, topic, key))

    async def forget_deployments(self, models: Sequence[str]) -> None:
        """Delete the models' routing state now and again at the end: the routing topic is
        shared by every test, and an earlier run's state (a higher generation) would win."""
        await tombstone(self.kafka, DEPLOYMENTS.name, models)
        self._stack.push_async_callback(
            bounded, lambda: tombstone(self.kafka, DEPLOYMENTS.name, models)
        )


@contextlib.asynccontextmanager
async def in_process(
    kafka_bootstrap: str,
    data_dir: Path,
    replication_factor: int = 1,
    secure: SecureKafka | None = None,
    identity: IdentityProvider | None = None,
) -> AsyncIterator[Platform]:
    async with contextlib.AsyncExitStack() as stack:
        yield Platform(kafka_bootstrap, data_dir, stack, replication_factor, secure, identity)
