"""A real registry service per test: gRPC on loopback, real Kafka, SQLite or PostgreSQL, and
the artifact store a test asks for (a local folder unless it parametrizes `artifact_store`);
or one per module and database (`shared_registry`) for tests that check only what their
own calls leave behind."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import select

from flywheel.registry.v1 import events_pb2 as events
from flywheel.registry.v1 import registry_pb2 as pb
from flywheel.registry.v1 import registry_pb2_grpc as pb_grpc
from flywheel.registry.v1 import types_pb2 as types
from flywheel_common.db import Database
from flywheel_common.events import EventTypes, decode_event, header
from flywheel_common.registration import registration
from flywheel_common.service import Service
from flywheel_common.settings import (
    AuthSettings,
    DatabaseSettings,
    KafkaSettings,
    Role,
    TelemetrySettings,
)
from flywheel_common.topics import MODEL_EVENTS
from flywheel_registry.app import build
from flywheel_registry.artifacts import BlobRow
from flywheel_registry.settings import RegistrySettings, S3Settings
from flywheel_testing.backends import S3Endpoint, reset_postgres, separate_postgres_database
from flywheel_testing.kafka import read_topic
from flywheel_testing.models import IrisModels
from flywheel_testing.s3 import delete_under, digests_under, s3_client, s3_settings
from flywheel_testing.tls import grpc_settings, secure_channel

TOKENS = {"reader-token": Role.READER, "writer-token": Role.WRITER, "admin-token": Role.ADMIN}
MAX_ARTIFACT_BYTES = 64 * 1024
MAX_REFERENCE_SAMPLE_BYTES = 16 * 1024
MAX_GRAPH_NODES = 1000


def registry_settings(
    database_url: str, kafka_bootstrap: str, data_dir: Path, **overrides: Any
) -> RegistrySettings:
    return RegistrySettings(
        grpc=grpc_settings(port=0),
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, linger_ms=0),
        telemetry=TelemetrySettings(metrics_port=-1),
        database=DatabaseSettings(url=database_url),
        data_dir=data_dir,
        max_artifact_bytes=MAX_ARTIFACT_BYTES,
        max_reference_sample_bytes=MAX_REFERENCE_SAMPLE_BYTES,
        max_graph_nodes=MAX_GRAPH_NODES,
        # A group of its own: no test waits on group membership left by another test.
        consumer_group=f"registry-test-{uuid.uuid4().hex[:8]}",
        **({"auth": AuthSettings(tokens=dict(TOKENS))} | overrides),
    )


@dataclass
class RegistryClient:
    """A stub that sends a role's bearer token with every call."""

    stub: pb_grpc.RegistryServiceStub
    token: str

    def __getattr__(self, method: str) -> Any:
        call = getattr(self.stub, method)

        def with_token(request: Any, **kwargs: Any) -> Any:
            return call(request, metadata=(("authorization", f"Bearer {self.token}"),), **kwargs)

        return with_token


@dataclass
class RunningRegistry:
    service: Service
    settings: RegistrySettings
    channel: grpc.aio.Channel

    def client(self, role: str = "writer") -> RegistryClient:
        return RegistryClient(pb_grpc.RegistryServiceStub(self.channel), f"{role}-token")

    async def stored_blobs(self) -> set[str]:
        """The digests of the blobs in the registry's artifact store, whichever it is."""
        if self.settings.artifact_store == "s3":
            async with s3_client(self.settings.s3) as client:
                return await digests_under(client, self.settings.s3)
        if self.settings.artifact_store == "database":
            database = Database(self.settings.database.url)
            async with database.transaction() as session:
                digests = set(await session.scalars(select(BlobRow.sha256)))
            await database.stop()
            return digests
        root = self.settings.artifact_folder() / "sha256"
        return {p.parent.name + p.name for p in root.rglob("*") if p.is_file()}

    @property
    def spooled_files(self) -> list[Path]:
        """Uploads not committed or discarded yet: none once a call has returned."""
        spool = (
            self.settings.artifact_folder() / "tmp"
            if self.settings.artifact_store == "local"
            else self.settings.data_dir / "spool"
        )
        return list(spool.iterdir())


@pytest.fixture
async def registry_database_url(database_url: str) -> str:
    if database_url.startswith("postgresql"):
        await reset_postgres(database_url)
    return database_url


@pytest.fixture
async def s3(s3_endpoint: S3Endpoint) -> AsyncIterator[S3Settings]:
    """Settings for a prefix of the test bucket that is this test's own, emptied after it."""
    settings = s3_settings(s3_endpoint, prefix=f"tests/{uuid.uuid4().hex}")
    yield settings
    async with s3_client(settings) as client:
        await delete_under(client, settings)


@pytest.fixture
def artifact_store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The registry's artifact store settings: `local`, unless a test parametrizes this
    fixture (indirect) with `database` or `s3`."""
    store = getattr(request, "param", "local")
    if store == "s3":
        return {"artifact_store": store, "s3": request.getfixturevalue("s3")}
    return {"artifact_store": store}


@pytest.fixture
async def registry(
    registry_database_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
    artifact_store: dict[str, Any],
) -> AsyncIterator[RunningRegistry]:
    settings = registry_settings(registry_database_url, kafka_bootstrap, tmp_path, **artifact_store)
    service = build(settings)
    await service.start()
    async with secure_channel(service.grpc.address) as channel:
        yield RunningRegistry(service, settings, channel)
    await service.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
async def shared_registry(
    request: pytest.FixtureRequest, kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[RunningRegistry]:
    """One registry for the module's tests on a database of its own: a SQLite file, or a
    PostgreSQL database apart from the one the other tests reset."""
    data_dir = tmp_path_factory.mktemp("shared-registry")
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{data_dir / 'registry.db'}"
    else:
        url = await separate_postgres_database(
            request.getfixturevalue("postgres_url"), "flywheel_shared_registry"
        )
    settings = registry_settings(url, kafka_bootstrap, data_dir)
    service = build(settings)
    await service.start()
    async with secure_channel(service.grpc.address) as channel:
        yield RunningRegistry(service, settings, channel)
    await service.stop()


@pytest.fixture
def model_name() -> str:
    return f"iris-{uuid.uuid4().hex[:8]}"


def metadata(model: str, **fields: Any) -> pb.RegisterModelVersionRequest:
    return pb.RegisterModelVersionRequest(metadata=pb.RegistrationMetadata(model=model, **fields))


async def register(
    client: RegistryClient, messages: list[pb.RegisterModelVersionRequest]
) -> pb.RegisterModelVersionResponse:
    async def stream() -> AsyncIterator[pb.RegisterModelVersionRequest]:
        for message in messages:
            yield message

    response: pb.RegisterModelVersionResponse = await client.RegisterModelVersion(stream())
    return response


async def model_events(
    kafka_bootstrap: str, model: str, at_least: int, timeout_ms: int = 15000
) -> list[tuple[str, Any]]:
    """(ce_id, message) of a model's events on flywheel.model-events, in order."""
    types = EventTypes.flywheel()
    found: list[tuple[str, Any]] = []
    deadline = time.monotonic() + timeout_ms / 1000
    while True:
        records = await read_topic(
            kafka_bootstrap,
            MODEL_EVENTS.name,
            at_least=0,
            partitions=MODEL_EVENTS.partitions,
            timeout_ms=60_000,
        )
        found = [
            (header(r.headers, "ce_id") or "", decode_event(r.headers, r.value, types).message)
            for r in records
            if r.key == model.encode()
        ]
        if len(found) >= at_least or time.monotonic() >= deadline:
            return found
        await asyncio.sleep(0.2)


async def relay_barrier(client: RegistryClient, kafka_bootstrap: str, artifact: bytes) -> None:
    """Return once every event committed before the call is on flywheel.model-events.

    The relay publishes in commit order, a batch at a time, and selects the next batch only
    when the previous one is acknowledged. Seeing a sentinel's event does not prove that the
    earlier events of its batch landed on the other partitions; a second sentinel, committed
    after the first was seen, is in a later batch, so seeing it does."""
    for _ in range(2):
        sentinel = f"sentinel-{uuid.uuid4().hex[:8]}"
        await register(client, registration(sentinel, artifact))
        assert await model_events(kafka_bootstrap, sentinel, at_least=1), "the relay is stuck"


async def expect_error(call: Awaitable[object], code: grpc.StatusCode, fragment: str = "") -> str:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call
    assert failure.value.code() == code, failure.value.details()
    assert fragment in (failure.value.details() or ""), failure.value.details()
    return failure.value.details() or ""


async def drain(stream: AsyncIterator[Any]) -> list[Any]:
    """Every message of a server stream (GetArtifact, GetReferenceSample)."""
    return [message async for message in stream]


@pytest.fixture
def iris(iris_models: IrisModels) -> IrisModels:
    return iris_models


__all__ = ["events", "types"]
