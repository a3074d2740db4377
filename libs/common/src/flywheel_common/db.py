"""Database access: one async SQLAlchemy engine per service; SQLite default, PostgreSQL by URL."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from enum import IntEnum
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, DateTime, Integer, MetaData, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry
from sqlalchemy.types import TypeDecorator


class Base(DeclarativeBase):
    """Declarative base of every table in Flywheel; each service owns its own database."""

    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(column_0_N_label)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "ck": "ck_%(table_name)s_%(constraint_name)s",
            "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


ROW_ID = BigInteger().with_variant(Integer, "sqlite")
"""A surrogate key: BIGINT on PostgreSQL; INTEGER on SQLite, where only that autoincrements."""

TIMESTAMP = DateTime(timezone=True)
"""A moment in time, with its zone (UTC everywhere in Flywheel)."""


class IntEnumColumn(TypeDecorator[IntEnum]):
    """An IntEnum kept as its number: the column stays INTEGER, rows read back as members."""

    impl = Integer
    cache_ok = True

    def __init__(self, enum: type[IntEnum]) -> None:
        super().__init__()
        self._enum = enum

    def process_bind_param(self, value: IntEnum | int | None, dialect: Any) -> int | None:
        return None if value is None else int(value)

    def process_result_value(self, value: int | None, dialect: Any) -> IntEnum | None:
        return None if value is None else self._enum(value)


async def insert_unless_present(
    session: AsyncSession, table: type[Base], values: dict[str, Any], unique: list[str]
) -> bool:
    """INSERT ... ON CONFLICT DO NOTHING on PostgreSQL and SQLite alike: a row that already
    exists (by the `unique` columns) is left as it is, even under concurrent inserts.
    True when the row was inserted."""
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    key = [table.__table__.c[name] for name in unique]
    result = await session.execute(
        insert(table).values(**values).on_conflict_do_nothing(index_elements=unique).returning(*key)
    )
    return result.first() is not None


async def upsert(
    session: AsyncSession,
    table: type[Base],
    rows: list[dict[str, Any]],
    unique: list[str],
    merge: Callable[[Any], dict[str, Any]] | None = None,
) -> None:
    """INSERT ... ON CONFLICT DO UPDATE of many rows, on PostgreSQL and SQLite alike.
    `merge(excluded)` gives the SET clause for a row that exists (`excluded` holds the new
    values); by default every column outside `unique` takes the new value. The rows go as
    parameters of one statement whose shape never changes, so SQLAlchemy compiles it once
    per process rather than once per call."""
    if not rows:
        return
    dialect = session.bind.dialect.name if session.bind else "sqlite"
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = insert(table)
    columns = [name for name in rows[0] if name not in unique]
    updates = (
        merge(statement.excluded)
        if merge is not None
        else {name: getattr(statement.excluded, name) for name in columns}
    )
    await session.execute(
        statement.on_conflict_do_update(index_elements=unique, set_=updates), rows
    )


def _tune_sqlite(dbapi_connection: DBAPIConnection, _: ConnectionPoolEntry) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the single writer; busy_timeout queues writers
    # instead of failing them with "database is locked".
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class Database:
    """An engine and its session factory; `transaction()` is the unit of work."""

    def __init__(self, url: str, echo: bool = False) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        engine_options: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            database = url.split("///", 1)[-1]
            if database and database != ":memory:":
                Path(database).parent.mkdir(parents=True, exist_ok=True)
        else:
            engine_options |= {"pool_pre_ping": True, "pool_size": 10}
        self.engine = create_async_engine(url, **engine_options)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _tune_sqlite)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    async def create_schema(self, metadata: MetaData = Base.metadata) -> None:
        async with self.engine.begin() as connection:
            await connection.run_sync(metadata.create_all)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error."""
        async with self._sessions() as session, session.begin():
            yield session

    async def start(self) -> None:
        """Fail fast when the database is unreachable; schemas are the owner's (migrations)."""
        async with self.engine.connect():
            pass

    async def stop(self) -> None:
        await self.engine.dispose()
