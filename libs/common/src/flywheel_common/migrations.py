"""Schema migrations (Alembic) of a service's own database, applied at start-up.

Each service keeps its scripts in its package and its own version table, so services that
share a database server never read each other's migration state.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command, context
from alembic.config import Config
from sqlalchemy import Connection, text

from flywheel_common import inbox, leases, outbox  # noqa: F401  (the shared tables)
from flywheel_common.db import Base, Database


def alembic_config(scripts: Path) -> Config:
    config = Config()
    config.set_main_option("script_location", str(scripts))
    return config


def _upgrade(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


class SchemaMigration:
    """Start-up component: migrates the database before anything uses it."""

    def __init__(self, database: Database, scripts: Path) -> None:
        self._database = database
        self._scripts = scripts

    async def start(self) -> None:
        await upgrade(self._database, self._scripts)

    async def stop(self) -> None:
        await self._database.stop()


MIGRATION_LOCK = 0x666C7977686C6D67
"""The PostgreSQL advisory lock replicas take to migrate one at a time."""


async def upgrade(database: Database, scripts: Path) -> None:
    """Bring the database to the newest schema; a no-op when it is there already.
    Replicas starting together migrate one after the other: on PostgreSQL each waits for
    a transaction-scoped advisory lock, and finds the schema migrated once it has it."""
    async with database.engine.begin() as connection:
        if not database.is_sqlite:
            await connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
            )
        await connection.run_sync(_upgrade, alembic_config(scripts))


def _revision(connection: Connection, config: Config, message: str) -> None:
    config.attributes["connection"] = connection
    command.revision(config, message=message, autogenerate=True)


async def new_revision(database: Database, scripts: Path, message: str) -> None:
    """Write a migration for the difference between the tables and the database (dev tool)."""
    async with database.engine.begin() as connection:
        await connection.run_sync(_revision, alembic_config(scripts), message)


def run_environment(version_table: str = "alembic_version") -> None:
    """The body of every service's migrations/env.py: migrate on the connection the service
    handed over (see `upgrade`), with the tables its storage module registered."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError(
            "run migrations through flywheel_common.migrations, which passes a connection"
        )
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
        version_table=version_table,
    )
    with context.begin_transaction():
        context.run_migrations()
