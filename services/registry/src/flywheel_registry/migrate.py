"""Schema migrations of the registry's database (Alembic), applied at start-up."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection

from flywheel_common.db import Database

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config


def _upgrade(connection: Connection, config: Config) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


class SchemaMigration:
    """Start-up component: migrates the database before anything uses it."""

    def __init__(self, database: Database) -> None:
        self._database = database

    async def start(self) -> None:
        await upgrade(self._database)

    async def stop(self) -> None:
        await self._database.stop()


async def upgrade(database: Database) -> None:
    """Bring the database to the newest schema; a no-op when it is there already."""
    async with database.engine.begin() as connection:
        await connection.run_sync(_upgrade, alembic_config())


def _revision(connection: Connection, config: Config, message: str) -> None:
    config.attributes["connection"] = connection
    command.revision(config, message=message, autogenerate=True)


async def new_revision(database: Database, message: str) -> None:
    """Write a migration for the difference between the tables and the database (dev tool)."""
    async with database.engine.begin() as connection:
        await connection.run_sync(_revision, alembic_config(), message)
