"""Two replicas of every Flywheel service as processes, on PostgreSQL and a Kafka cluster,
and the backends beneath them under a test's control: a replica or a broker is killed with
SIGKILL and started again as Kubernetes would restart it."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import grpc
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from sqlalchemy import select

from flywheel.deployer.v1 import deployer_pb2_grpc
from flywheel.drift.v1 import drift_pb2_grpc
from flywheel.registry.v1 import registry_pb2_grpc
from flywheel.retrain.v1 import retrain_pb2_grpc
from flywheel_common.db import Database
from flywheel_common.settings import (
    DatabaseSettings,
    ServiceSettings,
    TelemetrySettings,
    WithDatabase,
    WithRegistry,
)
from flywheel_deployer.settings import DeployerSettings
from flywheel_drift.settings import DriftSettings
from flywheel_drift.storage import PartitionOwnerRow
from flywheel_gateway.settings import GatewaySettings
from flywheel_registry.settings import RegistrySettings
from flywheel_retrain.settings import RetrainSettings
from flywheel_testing.backends import unused_port
from flywheel_testing.clients import replicas_target, retrying_options
from flywheel_testing.kafka import client_options
from flywheel_testing.leases import lease_holder
from flywheel_testing.platform import Platform
from flywheel_testing.processes import ServiceReplica
from flywheel_testing.tls import grpc_settings, pki, secure_channel
from inference import grpc_service_pb2_grpc

REPO = Path(__file__).resolve().parents[2]
SLOTS = ("a", "b")
KINDS: dict[str, type[ServiceSettings]] = {
    "registry": RegistrySettings,
    "deployer": DeployerSettings,
    "gateway": GatewaySettings,
    "drift": DriftSettings,
    "retrain": RetrainSettings,
}
STUBS: dict[str, Callable[[grpc.aio.Channel], Any]] = {
    "registry": registry_pb2_grpc.RegistryServiceStub,
    "deployer": deployer_pb2_grpc.DeployerServiceStub,
    "gateway": grpc_service_pb2_grpc.GRPCInferenceServiceStub,
    "drift": drift_pb2_grpc.DriftServiceStub,
    "retrain": retrain_pb2_grpc.RetrainServiceStub,
}
# Per-service settings beyond the test platform's: the registry keeps artifacts where every
# replica reads them; the stateful services log at INFO (leases, runs, rollouts), the
# gateways at WARNING (every request is an INFO line).
INFO = {"telemetry": TelemetrySettings(metrics_port=-1, log_level="INFO")}
EXTRA: dict[str, dict[str, Any]] = {
    "registry": {"artifact_store": "database", **INFO},
    "deployer": INFO,
    "drift": INFO,
    "retrain": INFO,
}

T = TypeVar("T")


async def timed(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> float:
    """Seconds until `condition()` holds, polled; TimeoutError naming what never happened."""
    began = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            while not await condition():
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise TimeoutError(f"waited {timeout:.0f}s for {what}") from None
    return time.monotonic() - began


@dataclass
class Fleet:
    """The replicas by service, each service's database, and a channel per service that
    reaches both replicas with README's retry policy."""

    replicas: dict[str, list[ServiceReplica]]
    databases: dict[str, str]
    logs: Path

    def target(self, service: str) -> str:
        return replicas_target([replica.address for replica in self.replicas[service]])

    def stub(self, service: str) -> Any:
        channel = secure_channel(self.target(service), options=retrying_options())
        return STUBS[service](channel)

    async def leader(self, service: str) -> tuple[ServiceReplica, ServiceReplica]:
        """(the replica holding the service's leader lease, the other one)."""
        holder = await lease_holder(self.databases[service])
        first, second = self.replicas[service]
        if holder is not None and holder[0] == second.settings.instance_id:
            return second, first
        return first, second

    def exited(self) -> list[str]:
        """Replicas whose process ended on its own."""
        return [
            f"{replica.settings.instance_id} (exit {replica.process.returncode})"
            for replicas in self.replicas.values()
            for replica in replicas
            if replica.process is not None and not replica.running
        ]

    async def start(self, service: str) -> None:
        await asyncio.gather(*(replica.start() for replica in self.replicas[service]))

    async def stop(self) -> None:
        await asyncio.gather(
            *(replica.stop() for replicas in self.replicas.values() for replica in replicas)
        )


def fleet_of(platform: Platform, databases: dict[str, str], root: Path, run: str) -> Fleet:
    """Settings for two replicas of each service (started by `Fleet.start`); the registry
    replicas are every other service's registry."""
    replicas: dict[str, list[ServiceReplica]] = {}
    fleet = Fleet(replicas, databases, root / "logs")
    for service, kind in KINDS.items():
        fields: dict[str, Any] = dict(EXTRA.get(service, {}))
        if issubclass(kind, WithDatabase):
            fields["database"] = DatabaseSettings(url=databases[service])
        if issubclass(kind, WithRegistry):
            fields["registry_address"] = fleet.target("registry")
            # A list of replicas names no one host: the certificate's `localhost` is checked.
            fields["registry_tls"] = (
                pki().client_tls().model_copy(update={"server_name": "localhost"})
            )
        replicas[service] = [
            ServiceReplica(
                f"flywheel_{service}",
                platform.settings(
                    kind,
                    service,
                    grpc=grpc_settings(port=unused_port()),
                    data_dir=root / f"{service}-{slot}",
                    instance_id=f"{service}-{slot}",
                    **({"gateway_id": f"gateway-{slot}-{run}"} if kind is GatewaySettings else {}),
                    **fields,
                ),
                fleet.logs / f"{service}-{slot}.log",
            )
            for slot in SLOTS
        ]
    return fleet


async def partition_owners(url: str) -> dict[int, str]:
    """Which drift replica holds each partition, as the drift database records it."""
    database = Database(url)
    try:
        async with database.transaction() as session:
            rows = await session.execute(
                select(PartitionOwnerRow.partition, PartitionOwnerRow.owner)
            )
            return {partition: owner for partition, owner in rows}
    finally:
        await database.stop()


@dataclass
class KafkaCluster:
    """The three brokers of `infra/kafka/start.sh --cluster`, controlled by its node.sh."""

    bootstrap: str

    @property
    def first_port(self) -> int:
        return int(self.bootstrap.split(",")[0].rsplit(":", 1)[1])

    async def node(self, action: str, node: int) -> None:
        """`infra/kafka/node.sh <action> <node> --cluster` (kill is SIGKILL of its pid)."""
        process = await asyncio.create_subprocess_exec(
            str(REPO / "infra/kafka/node.sh"),
            action,
            str(node),
            "--cluster",
            env=os.environ | {"KAFKA_PORT": str(self.first_port)},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await process.communicate()
        if process.returncode:
            raise RuntimeError(f"node.sh {action} {node} failed:\n{output.decode()}")

    async def partitions(self, topic: str) -> list[dict[str, Any]]:
        """The topic's partitions as the cluster's metadata describes them (leader, isr),
        asking again while a broker that just died is still asked."""
        while True:
            admin = AIOKafkaAdminClient(**client_options(self.bootstrap))
            try:
                await admin.start()
                [described] = await admin.describe_topics([topic])
                return sorted(described["partitions"], key=lambda p: int(p["partition"]))
            except KafkaError:
                await asyncio.sleep(0.2)
            finally:
                await admin.close()

    async def brokers(self) -> int:
        admin = AIOKafkaAdminClient(**client_options(self.bootstrap))
        await admin.start()
        try:
            brokers: list[Any] = (await admin.describe_cluster())["brokers"]
            return len(brokers)
        finally:
            await admin.close()


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives a key (as the services produce)."""
    hashed: int = murmur2(key.encode())
    return (hashed & 0x7FFFFFFF) % partitions
