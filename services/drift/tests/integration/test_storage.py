"""The detector's checkpoint tables on SQLite and PostgreSQL: the label join's changelog."""

from __future__ import annotations

from sqlalchemy import func, select

from flywheel_common.db import Database
from flywheel_common.migrations import upgrade
from flywheel_drift import storage
from flywheel_drift.app import MIGRATIONS
from flywheel_drift.windows import JoinChanges, LabelJoin, Pending
from flywheel_testing.backends import reset_postgres


async def replayed(database: Database) -> LabelJoin:
    join = LabelJoin(wait_seconds=3600)
    async with database.transaction() as session:
        for changes in await storage.join_log(session):
            join.apply(changes)
    return join


async def test_the_join_log_replays_to_the_join_and_compacts_into_a_base(
    database_url: str,
) -> None:
    database = Database(database_url)
    if database_url.startswith("postgresql"):
        await reset_postgres(database_url)
    await upgrade(database, MIGRATIONS)
    join = LabelJoin(wait_seconds=3600)
    try:
        join.prediction("a", Pending("iris", 1, "1", 100.0))
        join.prediction("b", Pending("iris", 2, "0", 101.0))
        join.label("c", "2", now=102.0)
        async with database.transaction() as session:
            await storage.save(session, {("p", 0): 1}, {}, join.changes())
        join.label("a", "1", now=103.0)  # a joins and stops waiting
        async with database.transaction() as session:
            await storage.save(session, {("p", 0): 2}, {}, join.changes())
        restored = await replayed(database)
        assert restored.everything() == join.everything()

        join.prediction("d", Pending("iris", 1, "1", 104.0))
        join.changes()
        async with database.transaction() as session:  # the whole join, as a base
            await storage.save(session, {("p", 0): 3}, {}, join.everything(), join_is_base=True)
        join.prediction("c", Pending("iris", 1, "2", 105.0))  # joins the waiting label c
        async with database.transaction() as session:
            await storage.save(session, {("p", 0): 4}, {}, join.changes())
            rows = await session.scalar(select(func.count()).select_from(storage.JoinLogRow))
        assert rows == 2  # the base and what came after; the rows before it are deleted
        restored = await replayed(database)
        assert restored.everything() == join.everything()
        assert restored.everything() == JoinChanges(
            predictions={
                "b": Pending("iris", 2, "0", 101.0),
                "d": Pending("iris", 1, "1", 104.0),
            },
            labels={},
        )
    finally:
        await database.stop()
