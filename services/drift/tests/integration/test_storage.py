"""The detector's checkpoint tables on SQLite and PostgreSQL: each partition's label-join
changelog, partition claims that fence an earlier owner, the alerts every replica lists, and
monitor configs that every replica applies whichever one stored them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy import func, select

from flywheel.drift.v1 import types_pb2 as types
from flywheel_common.db import Database
from flywheel_common.migrations import upgrade
from flywheel_drift import storage
from flywheel_drift.app import MIGRATIONS
from flywheel_drift.detection import Kind, Severity
from flywheel_drift.domain import Alert
from flywheel_drift.monitors import MonitorConfigs
from flywheel_drift.storage import AlertFilter, Checkpoint
from flywheel_drift.windows import JoinChanges, LabelJoin, Pending
from flywheel_testing.backends import reset_postgres
from flywheel_testing.waiting import eventually


@pytest.fixture
async def database(database_url: str) -> AsyncIterator[Database]:
    database = Database(database_url)
    if database_url.startswith("postgresql"):
        await reset_postgres(database_url)
    await upgrade(database, MIGRATIONS)
    try:
        yield database
    finally:
        await database.stop()


def checkpoint(
    partition: int,
    offset: int,
    join: JoinChanges | None = None,
    base: bool = False,
    alerts: list[Alert] | None = None,
) -> Checkpoint:
    return Checkpoint(
        partition=partition,
        offsets={"flywheel.predictions": offset},
        windows={("iris", partition + 1): (b"state", f"status {offset}".encode())},
        join=join or JoinChanges(),
        join_is_base=base,
        alerts=[(alert, alert.alert_id.encode()) for alert in alerts or []],
    )


async def save(database: Database, *checkpoints: Checkpoint) -> None:
    async with database.transaction() as session:
        await storage.save(session, list(checkpoints), alerts_kept=3)


async def replayed(database: Database, partition: int) -> LabelJoin:
    join = LabelJoin(wait_seconds=3600)
    async with database.transaction() as session:
        for changes in (await storage.load(session, partition)).join_log:
            join.apply(changes)
    return join


async def test_each_partition_replays_its_own_join_and_compacts_it_into_a_base(
    database: Database,
) -> None:
    join, other = LabelJoin(wait_seconds=3600), LabelJoin(wait_seconds=3600)
    join.prediction("a", Pending("iris", 1, "1", 100.0))
    join.prediction("b", Pending("iris", 2, "0", 101.0, 0.75))
    join.label("c", "2", now=102.0)
    other.prediction("x", Pending("wine", 1, "3", 100.0))
    await save(database, checkpoint(0, 1, join.changes()), checkpoint(1, 1, other.changes()))
    join.label("a", "1", now=103.0)  # a joins and stops waiting
    await save(database, checkpoint(0, 2, join.changes()))
    assert (await replayed(database, 0)).everything() == join.everything()

    join.prediction("d", Pending("iris", 1, "1", 104.0))
    join.changes()
    await save(database, checkpoint(0, 3, join.everything(), base=True))  # the whole join
    join.prediction("c", Pending("iris", 1, "2", 105.0))  # joins the waiting label c
    await save(database, checkpoint(0, 4, join.changes()))
    async with database.transaction() as session:
        rows = await session.scalar(
            select(func.count())
            .select_from(storage.JoinLogRow)
            .where(storage.JoinLogRow.partition == 0)
        )
        state = await storage.load(session, 0)
    assert rows == 2  # the base and what came after; the rows before it are deleted
    assert state.offsets == {"flywheel.predictions": 4}
    assert state.windows == {("iris", 1): b"state"}
    assert (await replayed(database, 0)).everything() == JoinChanges(
        predictions={
            "b": Pending("iris", 2, "0", 101.0, 0.75),
            "d": Pending("iris", 1, "1", 104.0),
        },
        labels={},
    )
    assert (await replayed(database, 1)).everything() == other.everything()  # untouched


async def test_a_claim_fences_the_partition_s_earlier_owner(database: Database) -> None:
    async with database.transaction() as session:
        first, kept = await storage.claim(session, 3, "replica-a")
        assert not kept  # nothing held before
        assert await storage.lost(session, {3: first}) == set()
    async with database.transaction() as session:
        second, kept = await storage.claim(session, 3, "replica-b")
        other, _ = await storage.claim(session, 4, "replica-b")
    assert (second, kept) == (first + 1, False)
    async with database.transaction() as session:
        assert await storage.lost(session, {3: first, 4: other}) == {3}
        assert await storage.lost(session, {3: second, 4: other}) == set()


async def test_a_partition_claimed_again_by_its_holder_is_kept_unless_claimed_between(
    database: Database,
) -> None:
    async with database.transaction() as session:
        first, _ = await storage.claim(session, 0, "replica-a")
        again, kept = await storage.claim(session, 0, "replica-a", held_epoch=first)
    assert (again, kept) == (first + 1, True)  # a rebalance that gave it back: keep it
    async with database.transaction() as session:
        await storage.claim(session, 0, "replica-b")  # someone else held it in between
        _, kept = await storage.claim(session, 0, "replica-a", held_epoch=again)
    assert not kept


def alert(number: int, kinds: set[Kind], severity: Severity, model: str = "iris") -> Alert:
    return Alert(
        alert_id=f"{model}:1:{number}",
        model=model,
        version=1,
        kinds=frozenset(kinds),
        severity=severity,
        summary="",
        occurred_at=1000.0 + number,
    )


async def test_alerts_are_kept_once_each_newest_first_and_filtered(database: Database) -> None:
    first = [
        alert(1, {Kind.DATA}, Severity.LOW),
        alert(2, {Kind.CONCEPT}, Severity.HIGH),
        alert(3, {Kind.DATA, Kind.QUALITY}, Severity.MEDIUM, model="wine"),
    ]
    await save(database, checkpoint(0, 1, alerts=first))
    await save(database, checkpoint(0, 1, alerts=first[:1]))  # replayed: kept once

    async def listed(matching: AlertFilter, offset: int = 0, limit: int = 10) -> list[str]:
        async with database.transaction() as session:
            page, _ = await storage.alerts(session, matching, offset, limit)
        return [message.decode() for message in page]

    assert await listed(AlertFilter()) == ["wine:1:3", "iris:1:2", "iris:1:1"]
    assert await listed(AlertFilter(model="iris")) == ["iris:1:2", "iris:1:1"]
    assert await listed(AlertFilter(kinds=frozenset({Kind.DATA}))) == ["wine:1:3", "iris:1:1"]
    assert await listed(AlertFilter(min_severity=Severity.MEDIUM)) == ["wine:1:3", "iris:1:2"]
    assert await listed(AlertFilter(start=1001.5, end=1003.0)) == ["iris:1:2"]
    async with database.transaction() as session:
        page, more = await storage.alerts(session, AlertFilter(), 1, 1)
    assert (page, more) == ([b"iris:1:2"], True)

    await save(database, checkpoint(1, 1, alerts=[alert(4, {Kind.PREDICTION}, Severity.LOW)]))
    assert await listed(AlertFilter()) == ["iris:1:4", "wine:1:3", "iris:1:2"]  # 3 kept


async def test_statuses_are_read_from_the_newest_checkpoint(database: Database) -> None:
    await save(database, checkpoint(0, 1), checkpoint(1, 1))
    await save(database, checkpoint(1, 2))
    async with database.transaction() as session:
        assert await storage.statuses(session, "iris") == [b"status 1", b"status 2"]
        assert await storage.statuses(session, "iris", 2) == [b"status 2"]
        assert await storage.statuses(session, "wine") == []


async def test_a_monitor_config_stored_by_one_replica_applies_on_the_other(
    database: Database,
) -> None:
    storing, holding = (MonitorConfigs(1000, database, refresh_seconds=0.05) for _ in "ab")
    await storing.start()
    await holding.start()  # holds the model's partition, with the default rules
    try:
        assert holding.monitor("iris").window.size == 1000
        config = types.MonitorConfig(
            model="iris", window=types.WindowSpec(kind=types.WINDOW_KIND_COUNT, size_count=50)
        )
        stored = await storing.set(config, None)

        async def applied() -> bool:
            return holding.monitor("iris").window.size == 50

        await eventually(applied, timeout=10)
        assert holding.get("iris")[0].revision == stored.revision
    finally:
        await storing.stop()
        await holding.stop()
