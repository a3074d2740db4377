"""The five services as their own processes on the real broker, as the fuzz suite attacks them.

Each runs `python -m flywheel_<name>` with authentication on (one admin token), a small
maximum message size so that oversize messages are cheap to send, and SQLite in its own
folder. Two models are seeded: one the gateway serves (for ModelInfer to reach the
model) and one the deployer fuzz may roll out and back; neither is in the other's pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flywheel.registry.v1 import registry_pb2 as registry_pb
from flywheel.registry.v1 import registry_pb2_grpc as registry_grpc
from flywheel_common.channels import sync_channel
from flywheel_common.registration import registration
from flywheel_common.settings import (
    AuthSettings,
    Role,
    ServiceSettings,
    WithConsumerGroup,
)
from flywheel_deployer.settings import DeployerSettings
from flywheel_drift.settings import DriftSettings
from flywheel_gateway.settings import GatewaySettings
from flywheel_registry.settings import RegistrySettings
from flywheel_retrain.settings import RetrainSettings
from flywheel_testing.backends import unused_port
from flywheel_testing.models import IrisModels
from flywheel_testing.platform import Platform
from flywheel_testing.processes import ServiceReplica, service_process
from flywheel_testing.tls import grpc_settings, pki, secure_channel
from inference import grpc_service_pb2 as inference_pb
from inference import grpc_service_pb2_grpc as inference_grpc

TOKEN = "fuzz-admin"
METADATA = (("authorization", f"Bearer {TOKEN}"),)
MAX_MESSAGE_BYTES = 4 * 1024 * 1024
"""The services' gRPC message limit in this suite (64 MiB by default)."""
START_TIMEOUT = 180.0
KINDS: dict[str, type[ServiceSettings]] = {
    "registry": RegistrySettings,
    "deployer": DeployerSettings,
    "gateway": GatewaySettings,
    "drift": DriftSettings,
    "retrain": RetrainSettings,
}


@dataclass
class FuzzFleet:
    replicas: dict[str, ServiceReplica]
    served_model: str
    """Registered, promoted and served by the gateway; only the gateway fuzz uses it."""
    deployed_model: str
    """Registered with versions 1 and 2; the deployer, drift and retrain fuzz use it."""
    registered_model: str
    """Registered with version 1; the registry fuzz changes it."""
    logs: Path
    tag: str
    """In every consumer group and instance id of this fleet (other platforms may share
    the broker)."""

    def address(self, service: str) -> str:
        return self.replicas[service].address

    def exited(self) -> list[str]:
        return [
            f"{name} (exit {replica.process.returncode}; log {self.logs / name}.log)"
            for name, replica in self.replicas.items()
            if replica.process is not None and not replica.running
        ]

    def serving(self, service: str) -> bool:
        with sync_channel(self.address(service), pki().client_tls()) as channel:
            try:
                answer = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=10
                )
            except grpc.RpcError:
                return False
        return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


@contextlib.contextmanager
def fuzz_fleet(kafka_bootstrap: str, data_dir: Path, iris: IrisModels) -> Iterator[FuzzFleet]:
    """The fleet for a synchronous test session (hypothesis drives plain functions): the
    processes are started and stopped on a loop of their own."""
    loop = asyncio.new_event_loop()
    context = _started(kafka_bootstrap, data_dir, iris)
    fleet = loop.run_until_complete(context.__aenter__())
    try:
        yield fleet
    finally:
        loop.run_until_complete(context.__aexit__(None, None, None))
        loop.close()


@contextlib.asynccontextmanager
async def _started(
    kafka_bootstrap: str, data_dir: Path, iris: IrisModels
) -> AsyncIterator[FuzzFleet]:
    suffix = uuid.uuid4().hex[:6]
    logs = data_dir / "logs"
    async with contextlib.AsyncExitStack() as stack:
        platform = Platform(kafka_bootstrap, data_dir, stack)
        registry_port = unused_port()
        replicas = {
            name: ServiceReplica(
                f"flywheel_{name}",
                _settings(platform, kind, name, registry_port, f"fuzz-{suffix}"),
                log_file=logs / f"{name}.log",
            )
            for name, kind in KINDS.items()
        }
        for replica in replicas.values():
            stack.push_async_callback(replica.stop)
        await _start(replicas["registry"])
        fleet = FuzzFleet(
            replicas,
            served_model=f"fuzz-served-{suffix}",
            deployed_model=f"fuzz-deployed-{suffix}",
            registered_model=f"fuzz-registered-{suffix}",
            logs=logs,
            tag=f"fuzz-{suffix}",
        )
        await asyncio.gather(
            _seed(fleet, iris),
            *(_start(replica) for name, replica in replicas.items() if name != "registry"),
        )
        await _promote(fleet)
        yield fleet


async def _start(replica: ServiceReplica) -> None:
    """Start a replica with time to spare: on a busy 2-core machine faust's first group
    join alone can take a minute."""
    replica.process = await service_process(
        replica.package, replica.settings, timeout=START_TIMEOUT, log_file=replica.log_file
    )


def _settings(
    platform: Platform, kind: type[ServiceSettings], name: str, registry_port: int, tag: str
) -> ServiceSettings:
    fields: dict[str, Any] = {
        "instance_id": f"{name}-{tag}",
        "grpc": grpc_settings(
            port=registry_port if name == "registry" else unused_port(),
            max_message_bytes=MAX_MESSAGE_BYTES,
        ),
        "auth": AuthSettings(tokens={TOKEN: Role.ADMIN}),
    }
    if issubclass(kind, WithConsumerGroup):
        fields["consumer_group"] = f"{name}-{tag}"
    if kind is GatewaySettings:
        fields["gateway_id"] = f"{name}-{tag}"  # names its routing table's reader
    if name != "registry":
        fields |= {"registry_address": f"127.0.0.1:{registry_port}", "registry_token": TOKEN}
    return platform.settings(kind, name, **fields)


async def _seed(fleet: FuzzFleet, iris: IrisModels) -> None:
    async with secure_channel(fleet.address("registry")) as channel:
        stub = registry_grpc.RegistryServiceStub(channel)
        uploads = [
            (fleet.served_model, iris.classifier),
            (fleet.deployed_model, iris.classifier),
            (fleet.deployed_model, iris.retrained),
            (fleet.registered_model, iris.classifier),
        ]
        for model, artifact in uploads:
            messages = registration(model, artifact, sample=iris.reference_sample)
            await stub.RegisterModelVersion(iter(messages), metadata=METADATA, timeout=60)


async def _promote(fleet: FuzzFleet, timeout: float = 90.0) -> None:
    """Promote the served model and wait until the gateway serves it."""
    async with secure_channel(fleet.address("registry")) as channel:
        await registry_grpc.RegistryServiceStub(channel).SetAlias(
            registry_pb.SetAliasRequest(
                model=fleet.served_model, alias="production", version=1, reason="fuzz"
            ),
            metadata=METADATA,
        )
    async with (
        secure_channel(fleet.address("gateway")) as channel,
        asyncio.timeout(timeout),
    ):
        gateway = inference_grpc.GRPCInferenceServiceStub(channel)
        while True:
            with contextlib.suppress(grpc.aio.AioRpcError):
                ready = await gateway.ModelReady(
                    inference_pb.ModelReadyRequest(name=fleet.served_model), metadata=METADATA
                )
                if ready.ready:
                    return
            await asyncio.sleep(0.2)
