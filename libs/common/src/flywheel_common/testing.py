"""Pytest fixtures shared by every Flywheel test suite (loaded with `-p flywheel_common.testing`).

Integration fixtures talk to the real broker and database that `make test` starts; when they
are not running the tests fail with the command that starts them, never skip.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.structs import ConsumerRecord
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flywheel_common.db import Database
from flywheel_common.registration import registration as registration
from flywheel_common.settings import KafkaSettings, TelemetrySettings
from flywheel_common.sklearn_onnx import onnx_from_sklearn as onnx_from_sklearn
from flywheel_common.telemetry import configure_telemetry

KAFKA_ENV = "FLYWHEEL_TEST_KAFKA_BOOTSTRAP"
POSTGRES_ENV = "FLYWHEEL_TEST_POSTGRES_URL"

_spans = InMemorySpanExporter()


def _reachable(address: str) -> bool:
    host, _, port = address.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    """Every span the test process finishes, for asserting on traces."""
    configure_telemetry(
        "flywheel-tests", "tests", TelemetrySettings(), (SimpleSpanProcessor(_spans),)
    )
    return _spans


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    address = os.environ.get(KAFKA_ENV, "127.0.0.1:19092")
    if not _reachable(address):
        pytest.fail(f"no Kafka broker at {address}: run `make kafka-up` (or set {KAFKA_ENV})")
    return address


@pytest.fixture(scope="session")
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_bootstrap, linger_ms=0)


NewTopicFactory = Callable[..., Awaitable[str]]


@pytest.fixture
async def new_topic(kafka_bootstrap: str) -> AsyncIterator[NewTopicFactory]:
    """Creates uniquely named topics for one test and deletes them afterwards."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    created: list[str] = []

    async def create(prefix: str = "test", partitions: int = 1, compact: bool = False) -> str:
        name = f"{prefix}.{uuid.uuid4().hex[:10]}"
        config = {"cleanup.policy": "compact"} if compact else {}
        await admin.create_topics([NewTopic(name, partitions, 1, topic_configs=config)])
        created.append(name)
        return name

    yield create
    if created:
        await admin.delete_topics(created)
    await admin.close()


@pytest.fixture
def group_id() -> str:
    return f"test-group-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def postgres_url() -> str:
    url = os.environ.get(POSTGRES_ENV, "postgresql+psycopg://postgres@127.0.0.1:15432/flywheel")
    host_port = url.split("@", 1)[-1].split("/", 1)[0]
    if not _reachable(host_port):
        pytest.fail(f"no PostgreSQL at {host_port}: run `make postgres-up` (or set {POSTGRES_ENV})")
    return url


async def reset_postgres(url: str) -> None:
    """Empty the test database: every table, sequence and migration record."""
    from sqlalchemy import text

    db = Database(url)
    async with db.engine.begin() as connection:
        await connection.execute(text("DROP SCHEMA public CASCADE"))
        await connection.execute(text("CREATE SCHEMA public"))
    await db.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, then the real PostgreSQL (reset first)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A Database with the shared tables (outbox, processed events) created."""
    if database_url.startswith("postgresql"):
        await reset_postgres(database_url)
    db = Database(database_url)
    await db.create_schema()
    yield db
    await db.stop()


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def free_port() -> int:
    return unused_port()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under an integration/ or e2e/ folder are integration tests."""
    for item in items:
        parts = Path(str(item.path)).parts
        if "integration" in parts or "e2e" in parts:
            item.add_marker(pytest.mark.integration)


@dataclass(frozen=True)
class IrisModels:
    """Real ONNX models trained on scikit-learn's bundled iris data (nothing downloaded)."""

    features: Any
    """float32 [150, 4] inputs."""
    labels: Any
    classifier: bytes
    """LogisticRegression; input `features` FP32[?, 4], outputs `label` and `probabilities`."""
    retrained: bytes
    """A differently regularised classifier with the same signature."""
    three_features: bytes
    """Trained on 3 of the 4 columns: incompatible with `classifier`."""

    @property
    def reference_sample(self) -> bytes:
        return bytes(self.features.tobytes())


@pytest.fixture(scope="session")
def iris_models() -> IrisModels:
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    features, labels = load_iris(return_X_y=True)
    features = features.astype(np.float32)
    return IrisModels(
        features=features,
        labels=labels,
        classifier=onnx_from_sklearn(LogisticRegression(max_iter=500).fit(features, labels), 4),
        retrained=onnx_from_sklearn(
            LogisticRegression(C=0.1, max_iter=500).fit(features, labels), 4
        ),
        three_features=onnx_from_sklearn(
            LogisticRegression(max_iter=500).fit(features[:, :3], labels), 3
        ),
    )


async def read_topic(
    bootstrap: str, topic: str, *, at_least: int, partitions: int = 1, timeout_ms: int = 15000
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of a topic from the beginning, waiting until at least `at_least` arrived."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        end_offsets = await consumer.end_offsets(assigned)
        records: list[ConsumerRecord[bytes, bytes]] = []
        waited = 0
        while waited < timeout_ms:
            batch = await consumer.getmany(timeout_ms=200)
            waited += 200
            for partition_records in batch.values():
                records.extend(partition_records)
            positions = [await consumer.position(p) for p in assigned]
            caught_up = all(
                position >= end_offsets[p] for p, position in zip(assigned, positions, strict=True)
            )
            if len(records) >= at_least and caught_up:
                break
        return records
    finally:
        await consumer.stop()


async def tombstone(bootstrap: str, topic: str, keys: Sequence[str]) -> None:
    """Delete keys from a compacted topic, so replicas of later tests do not act on them."""
    if not keys:
        return
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key in keys:
            await producer.send_and_wait(topic, None, key=key.encode())
    finally:
        await producer.stop()


async def eventually(
    condition: Callable[[], Awaitable[bool]], timeout: float = 60.0, poll: float = 0.1
) -> None:
    """Wait until `condition()` holds, checking every `poll` seconds; TimeoutError after
    `timeout` (what a test waits on is an outcome, never a fixed sleep)."""
    async with asyncio.timeout(timeout):
        # Polling on purpose: the outcome lives in another process, which sets no event here.
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(poll)


async def bounded(step: Callable[[], Awaitable[None]], seconds: float = 60.0) -> None:
    """Run a teardown step; one that hangs fails the test by name instead of timing it out."""
    try:
        async with asyncio.timeout(seconds):
            await step()
    except TimeoutError:
        pytest.fail(f"teardown step {step.__qualname__} did not finish in {seconds:.0f}s")
