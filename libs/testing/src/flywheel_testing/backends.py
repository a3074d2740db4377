"""Where the real Kafka broker, PostgreSQL and S3 endpoint of the tests are, and how to
reach them."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import make_url, text

from flywheel_common.db import Database

KAFKA_ENV = "FLYWHEEL_TEST_KAFKA_BOOTSTRAP"
POSTGRES_ENV = "FLYWHEEL_TEST_POSTGRES_URL"
DEFAULT_KAFKA = "127.0.0.1:19092"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:15432/flywheel"
S3_ENV = "FLYWHEEL_TEST_S3_ENDPOINT"
S3_BUCKET_ENV = "FLYWHEEL_TEST_S3_BUCKET"
S3_KEY_ENV = "FLYWHEEL_TEST_S3_ACCESS_KEY_ID"
S3_SECRET_ENV = "FLYWHEEL_TEST_S3_SECRET_ACCESS_KEY"


@dataclass(frozen=True)
class S3Endpoint:
    """An S3-compatible server and a bucket on it; by default the Swift of infra/swift."""

    url: str = "http://127.0.0.1:18080"
    bucket: str = "flywheel"
    access_key_id: str = "flywheel:tester"
    secret_access_key: str = "flywheel-secret"
    region: str = "us-east-1"

    @property
    def address(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"


def kafka_address() -> str:
    return os.environ.get(KAFKA_ENV, DEFAULT_KAFKA)


def postgres_url() -> str:
    return os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES)


def s3_endpoint() -> S3Endpoint:
    default = S3Endpoint()
    return S3Endpoint(
        url=os.environ.get(S3_ENV, default.url),
        bucket=os.environ.get(S3_BUCKET_ENV, default.bucket),
        access_key_id=os.environ.get(S3_KEY_ENV, default.access_key_id),
        secret_access_key=os.environ.get(S3_SECRET_ENV, default.secret_access_key),
    )


def reachable(address: str) -> bool:
    """Whether a TCP connection to `host:port` (the first of a comma-separated list) opens."""
    host, _, port = address.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


async def reset_postgres(url: str) -> None:
    """Empty the test database: every table, sequence and migration record."""
    db = Database(url)
    async with db.engine.begin() as connection:
        await connection.execute(text("DROP SCHEMA public CASCADE"))
        await connection.execute(text("CREATE SCHEMA public"))
    await db.stop()


async def separate_postgres_database(url: str, name: str) -> str:
    """The URL of an empty PostgreSQL database `name` beside the one at `url` (dropped and
    made again): for state that must outlive the resets other tests make at `url`."""
    server = Database(url)
    autocommit = server.engine.execution_options(isolation_level="AUTOCOMMIT")
    async with autocommit.connect() as connection:
        await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    await server.stop()
    return make_url(url).set(database=name).render_as_string(hide_password=False)


async def fresh_database(url: str) -> Database:
    """A Database on an empty schema (PostgreSQL is reset first) with every table of the
    modules imported so far created."""
    if url.startswith("postgresql"):
        await reset_postgres(url)
    db = Database(url)
    await db.create_schema()
    return db


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
