"""Replicas that start together on one PostgreSQL database migrate it one at a time."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from flywheel_common.db import Database
from flywheel_common.migrations import upgrade
from flywheel_drift.app import MIGRATIONS
from flywheel_testing.backends import reset_postgres

pytestmark = pytest.mark.integration


async def test_replicas_migrating_an_empty_database_at_once_all_start(postgres_url: str) -> None:
    await reset_postgres(postgres_url)
    replicas = [Database(postgres_url) for _ in range(4)]
    try:
        await asyncio.gather(*(upgrade(database, MIGRATIONS) for database in replicas))
        async with replicas[0].engine.connect() as connection:
            applied = await connection.scalar(text("SELECT count(*) FROM alembic_version_drift"))
        assert applied == 1
    finally:
        await asyncio.gather(*(database.stop() for database in replicas))
