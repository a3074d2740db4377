"""Pytest fixtures shared by every Flywheel test suite (loaded with `-p flywheel_testing.plugin`).

Integration fixtures talk to the real broker and database that `make test` starts; when they
are not running the tests fail with the command that starts them, never skip.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flywheel_common.db import Database
from flywheel_common.kafka_security import kafka_client_options
from flywheel_common.service import ABANDONED
from flywheel_common.service import log as service_log
from flywheel_common.settings import KafkaSettings, TelemetrySettings
from flywheel_common.telemetry import configure_telemetry
from flywheel_testing import backends
from flywheel_testing.models import IrisModels, train_iris_models
from flywheel_testing.secure_kafka import SecureKafka, secure_kafka

# The newest spans only: a test clears them before what it asserts on, and a whole suite's
# calls would otherwise pile up in memory.
_spans = InMemorySpanExporter(max_spans=50_000)

NewTopicFactory = Callable[..., Awaitable[str]]


class _SecureKafkaInBackground:
    """The SASL_SSL broker, started in a thread as soon as collection shows that a test needs
    it: its start (certificates, users, a JVM per line of ACLs: half a minute and more) then
    overlaps the tests that run before."""

    def __init__(self) -> None:
        self._stack = ExitStack()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="secure-kafka")
        self._started: Future[SecureKafka] | None = None

    def start(self) -> None:
        if self._started is None:
            self._started = self._pool.submit(self._stack.enter_context, secure_kafka())

    def broker(self) -> SecureKafka:
        self.start()
        assert self._started is not None
        return self._started.result()

    def stop(self) -> None:
        if self._started is not None:
            self._started.exception()  # wait for a start under way; its error is reported
            self._stack.close()
        self._pool.shutdown()


_secure_kafka = _SecureKafkaInBackground()


def _needs_secure_kafka(item: pytest.Item) -> bool:
    return "kafka_sasl_ssl" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under an integration/ or e2e/ folder are integration tests. The tests on the
    SASL_SSL broker run last, so its start has the whole run to finish in the background."""
    for item in items:
        parts = Path(str(item.path)).parts
        if "integration" in parts or "e2e" in parts:
            item.add_marker(pytest.mark.integration)
    items.sort(key=_needs_secure_kafka)  # stable: every other order stays


def pytest_collection_finish(session: pytest.Session) -> None:
    """Starts the SASL_SSL broker now if a selected test will need it."""
    needed = any(_needs_secure_kafka(item) for item in session.items)
    if needed and not session.config.option.collectonly:
        _secure_kafka.start()


def pytest_sessionfinish() -> None:
    _secure_kafka.stop()


class _AbandonedComponents(logging.Handler):
    """Components a service gave up stopping, and the test that was running: each one cost
    its teardown the whole stop timeout, and a pod its shutdown the same."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.seen: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage() == ABANDONED:
            test = os.environ.get("PYTEST_CURRENT_TEST", "outside a test")
            self.seen.append(f"{getattr(record, 'component', '?')} in {test}")


_abandoned = _AbandonedComponents()


def pytest_configure() -> None:
    service_log.addHandler(_abandoned)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _abandoned.seen:
        terminalreporter.section("components that did not stop in time")
        for line in _abandoned.seen:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session", autouse=True)
def span_exporter() -> InMemorySpanExporter:
    """The spans the test process finishes, for asserting on traces. Installed before the
    first test, so the process's telemetry outlives every service a test starts and stops."""
    configure_telemetry(
        "flywheel-tests", "tests", TelemetrySettings(), (SimpleSpanProcessor(_spans),)
    )
    return _spans


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    address = backends.kafka_address()
    if not backends.reachable(address):
        pytest.fail(
            f"no Kafka broker at {address}: run `make kafka-up` (or set {backends.KAFKA_ENV})"
        )
    return address


@pytest.fixture(scope="session")
def kafka_settings(kafka_bootstrap: str) -> KafkaSettings:
    return KafkaSettings(bootstrap_servers=kafka_bootstrap, linger_ms=0)


@pytest.fixture(scope="session")
def kafka_sasl_ssl() -> SecureKafka:
    """The SASL_SSL broker with the ACLs of infra/kafka/acls.conf (started for the session
    by infra/kafka/start.sh --sasl-ssl unless FLYWHEEL_TEST_KAFKA_SASL_BOOTSTRAP names one)."""
    return _secure_kafka.broker()


@pytest.fixture
async def new_topic(kafka_settings: KafkaSettings) -> AsyncIterator[NewTopicFactory]:
    """Creates uniquely named topics for one test and deletes them afterwards."""
    admin = AIOKafkaAdminClient(**kafka_client_options(kafka_settings))
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
    url = backends.postgres_url()
    host_port = url.split("@", 1)[-1].split("/", 1)[0]
    if not backends.reachable(host_port):
        pytest.fail(
            f"no PostgreSQL at {host_port}: run `make postgres-up` (or set {backends.POSTGRES_ENV})"
        )
    return url


@pytest.fixture(scope="session")
def s3_endpoint() -> backends.S3Endpoint:
    endpoint = backends.s3_endpoint()
    if not backends.reachable(endpoint.address):
        pytest.fail(
            f"no S3 endpoint at {endpoint.url}: run `make swift-up` (or set {backends.S3_ENV})"
        )
    return endpoint


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database: a SQLite file, then the real PostgreSQL (reset first)."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'test.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    """A Database with the shared tables (outbox, processed events) created."""
    db = await backends.fresh_database(database_url)
    yield db
    await db.stop()


@pytest.fixture
def free_port() -> int:
    return backends.unused_port()


@pytest.fixture(scope="session")
def iris_models() -> IrisModels:
    return train_iris_models()
