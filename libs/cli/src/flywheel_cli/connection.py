"""Where the services are and how to call them: addresses, the token, errors that say what
to fix."""

from __future__ import annotations

import asyncio
import ssl
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from flywheel.deployer.v1 import deployer_pb2_grpc
from flywheel.drift.v1 import drift_pb2_grpc
from flywheel.registry.v1 import registry_pb2_grpc
from flywheel.retrain.v1 import retrain_pb2_grpc
from flywheel_common.channels import aio_channel
from flywheel_common.settings import ClientTlsSettings, KafkaSecurity, KafkaSettings
from inference import grpc_service_pb2_grpc

T = TypeVar("T")


CREDENTIALS_FILE = Path(".run/cli.env")
"""Where `make run` (`flywheel certs init`) leaves the CLI's CA, client certificate and
admin token; read when present, below the variables themselves."""


class Addresses(BaseSettings):
    """Read from FLYWHEEL_CLI_* variables, then from .run/cli.env when it exists; the
    defaults are `make run`'s."""

    model_config = SettingsConfigDict(
        env_prefix="FLYWHEEL_CLI_",
        env_nested_delimiter="__",
        env_file=CREDENTIALS_FILE,
        extra="ignore",
    )

    registry: str = "127.0.0.1:50051"
    deployer: str = "127.0.0.1:50052"
    gateway: str = "127.0.0.1:8001"
    drift: str = "127.0.0.1:50054"
    drift_reports: str = "https://127.0.0.1:8054"
    """Where the drift service serves its HTML reports (its REPORT__ settings)."""
    retrain: str = "127.0.0.1:50055"
    kafka: str = "127.0.0.1:19092"
    kafka_auth: KafkaSecurity = KafkaSecurity()
    """TLS and SASL towards Kafka, as the services' KAFKA__ settings:
    FLYWHEEL_CLI_KAFKA_AUTH__SECURITY_PROTOCOL=SASL_SSL and so on."""
    token: str = ""
    tls: ClientTlsSettings = ClientTlsSettings()
    """FLYWHEEL_CLI_TLS__CA_FILE (the CA to trust), __CERT_FILE and __KEY_FILE (mutual
    TLS), __ENABLED=false (plaintext)."""

    def of(self, service: str) -> str:
        return str(getattr(self, service))

    def kafka_settings(self, **fields: Any) -> KafkaSettings:
        """Client settings for the brokers at `kafka`; `fields` add producer options."""
        return KafkaSettings(bootstrap_servers=self.kafka, **dict(self.kafka_auth), **fields)

    def environment(self) -> dict[str, str]:
        """The FLYWHEEL_CLI_* variables that give a child process (a training script, the
        CLI) these addresses, token, TLS and Kafka security settings."""
        sections = ("tls", "kafka_auth")
        variables = {
            f"FLYWHEEL_CLI_{name.upper()}": str(value)
            for name, value in self.model_dump(exclude=set(sections)).items()
        }
        for section in sections:
            for name, value in getattr(self, section):
                if value is None:
                    continue
                if isinstance(value, SecretStr):
                    value = value.get_secret_value()
                text = str(value).lower() if isinstance(value, bool) else str(value)
                variables[f"FLYWHEEL_CLI_{section.upper()}__{name.upper()}"] = text
        return variables


class CommandError(Exception):
    """A failure the user can act on; printed without a traceback."""


_STUBS: dict[str, Callable[[grpc.aio.Channel], Any]] = {
    "registry": registry_pb2_grpc.RegistryServiceStub,
    "deployer": deployer_pb2_grpc.DeployerServiceStub,
    "gateway": grpc_service_pb2_grpc.GRPCInferenceServiceStub,
    "drift": drift_pb2_grpc.DriftServiceStub,
    "retrain": retrain_pb2_grpc.RetrainServiceStub,
}


@dataclass
class Clients:
    """One channel per service for the duration of a command."""

    addresses: Addresses

    def __post_init__(self) -> None:
        self._channels: dict[str, grpc.aio.Channel] = {}

    def stub(self, service: str) -> Any:
        if service not in self._channels:
            self._channels[service] = aio_channel(self.addresses.of(service), self.addresses.tls)
        return _STUBS[service](self._channels[service])

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        token = self.addresses.token
        return (("authorization", f"Bearer {token}"),) if token else ()

    async def call(self, service: str, method: str, request: Any, timeout: float = 30.0) -> Any:
        """A unary call; gRPC errors become CommandErrors naming the service and the fix."""
        try:
            return await getattr(self.stub(service), method)(
                request, metadata=self.metadata, timeout=timeout
            )
        except grpc.aio.AioRpcError as error:
            raise CommandError(explain(service, self.addresses.of(service), error)) from None

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


# How gRPC itself words an UNAVAILABLE it raises without reaching a server; a server's own
# UNAVAILABLE (a gateway with no version ready yet) says what to wait for.
_UNREACHABLE = (
    "failed to connect",
    "connection refused",
    "dns resolution failed",
    "connections to all backends failing",
    "socket closed",
)


_TLS_FAILURES = ("ssl", "handshake", "certificate")


def explain(service: str, address: str, error: grpc.aio.AioRpcError) -> str:
    code = error.code()
    details = error.details() or ""
    if code == grpc.StatusCode.UNAVAILABLE and any(
        phrase in details.lower() for phrase in _TLS_FAILURES
    ):
        return (
            f"the TLS handshake with the {service} at {address} failed ({details}): trust its CA "
            "with FLYWHEEL_CLI_TLS__CA_FILE (and FLYWHEEL_CLI_TLS__CERT_FILE/KEY_FILE when it "
            "requires client certificates), or run `make run` once to write .run/cli.env"
        )
    if code == grpc.StatusCode.UNAVAILABLE and (
        not details or any(phrase in details.lower() for phrase in _UNREACHABLE)
    ):
        return (
            f"cannot reach the {service} at {address}: is the platform running (`make run`)? "
            f"Set FLYWHEEL_CLI_{service.upper()} if it listens elsewhere."
        )
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"the {service} wants a token: set FLYWHEEL_CLI_TOKEN or pass --token"
    return f"{details} ({code.name.lower()})"


def fetch_page(addresses: Addresses, path: str, timeout: float = 60.0) -> str:
    """GET `path` of the drift reports with the token, over TLS as gRPC calls are made."""
    url = addresses.drift_reports.rstrip("/") + path
    headers = {"Authorization": f"Bearer {addresses.token}"} if addresses.token else {}
    try:
        with urllib.request.urlopen(
            urllib.request.Request(url, headers=headers), timeout=timeout,
            context=_https_context(addresses.tls) if url.startswith("https:") else None,
        ) as response:  # fmt: skip
            return str(response.read().decode())
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace").strip()
        if error.code == 401:
            raise CommandError(
                f"the drift reports want a token ({detail}): set FLYWHEEL_CLI_TOKEN or pass --token"
            ) from None
        raise CommandError(f"{detail} (HTTP {error.code})") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise CommandError(
            f"cannot fetch {url} ({reason}): is the platform running (`make run`)? Set "
            "FLYWHEEL_CLI_DRIFT_REPORTS if the drift serves its reports elsewhere."
        ) from None


def _https_context(tls: ClientTlsSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=tls.ca_file)
    if tls.cert_file is not None and tls.key_file is not None:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    return context


def run(addresses: Addresses, command: Callable[[Clients], Awaitable[T]]) -> T:
    async def main() -> T:
        clients = Clients(addresses)
        try:
            return await command(clients)
        finally:
            await clients.close()

    return asyncio.run(main())
