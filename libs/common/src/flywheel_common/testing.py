"""Pytest fixtures shared by every Flywheel test suite (loaded with `-p flywheel_common.testing`).

Integration fixtures talk to the real broker and database that `make test` starts; when they
are not running the tests fail with the command that starts them, never skip.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flywheel_common.db import Database
from flywheel_common.settings import KafkaSettings, TelemetrySettings
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


@pytest.fixture(params=["sqlite", "postgresql"])
async def database(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Database]:
    """An empty database with Flywheel's schema: SQLite, then the real PostgreSQL."""
    if request.param == "sqlite":
        db = Database(f"sqlite+aiosqlite:///{tmp_path / 'test.db'}")
    else:
        db = Database(request.getfixturevalue("postgres_url"))
        from flywheel_common.db import Base

        async with db.engine.begin() as connection:
            await connection.run_sync(Base.metadata.drop_all)
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
