"""Where the real Kafka broker and PostgreSQL of the tests are, and how to reach them."""

from __future__ import annotations

import os
import socket

from sqlalchemy import text

from flywheel_common.db import Database

KAFKA_ENV = "FLYWHEEL_TEST_KAFKA_BOOTSTRAP"
POSTGRES_ENV = "FLYWHEEL_TEST_POSTGRES_URL"
DEFAULT_KAFKA = "127.0.0.1:19092"
DEFAULT_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:15432/flywheel"


def kafka_address() -> str:
    return os.environ.get(KAFKA_ENV, DEFAULT_KAFKA)


def postgres_url() -> str:
    return os.environ.get(POSTGRES_ENV, DEFAULT_POSTGRES)


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


def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
