"""Leases on SQLite and the real PostgreSQL: one holder at a time, takeover after expiry or
release, a deposed holder's fenced write that cannot commit, and a stop that does not wait
on a database that blocks it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select, update

from flywheel_common.db import Database
from flywheel_common.inbox import ProcessedEvent, claim
from flywheel_common.leases import Lease, LeaseLost, LeaseRow
from flywheel_common.settings import LeaseSettings

pytestmark = pytest.mark.integration

SETTINGS = LeaseSettings(ttl_seconds=2.0, renew_seconds=0.5)

STOP_GUARD = 3 * SETTINGS.ttl_seconds
"""Tells a stop that hangs from one that returns: a stop returns within the lease's ttl;
one that waits on the database waits for good on PostgreSQL (a lock), and twice SQLite's
10 s busy timeout there."""


class Clock:
    """Wall time the test can move forward, as a stalled or skewed replica would see it."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def leases(database: Database, clock: Clock) -> AsyncIterator[Callable[[str], Lease]]:
    made: list[Lease] = []

    def lease(holder: str) -> Lease:
        made.append(Lease(database, "leader", holder, SETTINGS, clock=clock))
        return made[-1]

    yield lease
    for one in made:
        with contextlib.suppress(Exception):
            await one.stop()


async def written(database: Database, event_id: str) -> int:
    async with database.transaction() as session:
        count = await session.scalar(
            select(func.count()).where(ProcessedEvent.event_id == event_id)
        )
    return int(count or 0)


async def fenced_write(database: Database, lease: Lease, event_id: str) -> None:
    """A write of the leader's work: it commits only while `lease` holds."""
    async with database.transaction() as session:
        await claim(session, "test", event_id)
        await lease.fence(session)


async def test_one_holder_at_a_time(leases: Callable[[str], Lease]) -> None:
    a, b = leases("a"), leases("b")
    assert await a.try_acquire()
    assert not await b.try_acquire()
    assert await a.try_acquire()  # renewing keeps the token
    assert (a.token, b.token) == (1, None)
    assert a.held
    assert not b.held


async def test_a_standby_takes_an_expired_lease_with_a_new_token(
    leases: Callable[[str], Lease], clock: Clock
) -> None:
    a, b = leases("a"), leases("b")
    assert await a.try_acquire()
    clock.offset = timedelta(seconds=SETTINGS.ttl_seconds + 0.1)  # a stopped renewing
    assert await b.try_acquire()
    assert b.token == 2
    assert not await a.try_acquire()  # a wakes up: the lease is b's now
    assert a.token is None


async def test_a_released_lease_is_taken_at_once(leases: Callable[[str], Lease]) -> None:
    a, b = leases("a"), leases("b")
    await a.start()
    assert a.held
    await a.stop()
    assert await b.try_acquire()
    assert b.token == 2


async def test_a_deposed_holder_cannot_commit_a_fenced_write(
    database: Database, leases: Callable[[str], Lease], clock: Clock
) -> None:
    a, b = leases("a"), leases("b")
    assert await a.try_acquire()
    async with database.transaction() as session:
        await a.fence(session)
        await claim(session, "test", "while-leading")
    assert await written(database, "while-leading") == 1

    # a stalls past its expiry while still believing it leads; b takes over.
    clock.offset = timedelta(seconds=SETTINGS.ttl_seconds + 0.1)
    assert await b.try_acquire()
    assert a.held  # a's own view has not caught up yet: only the fence knows

    with pytest.raises(LeaseLost):
        await fenced_write(database, a, "after-deposed")
    assert await written(database, "after-deposed") == 0
    assert not a.held


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
async def test_a_takeover_waits_for_the_fenced_transaction_in_flight(
    database: Database, leases: Callable[[str], Lease], clock: Clock
) -> None:
    """PostgreSQL only: SQLite has one writer at a time, so nothing runs concurrently."""
    a, b = leases("a"), leases("b")
    assert await a.try_acquire()
    fenced = asyncio.Event()
    commit = asyncio.Event()

    async def write_as_leader() -> None:
        async with database.transaction() as session:
            await a.fence(session)
            await claim(session, "test", "in-flight")
            fenced.set()
            await commit.wait()

    writer = asyncio.create_task(write_as_leader())
    await fenced.wait()
    clock.offset = timedelta(seconds=SETTINGS.ttl_seconds + 0.1)
    takeover = asyncio.create_task(b.try_acquire())
    await asyncio.sleep(0.5)
    assert not takeover.done()  # blocked by the leader's transaction
    commit.set()
    await writer
    assert await takeover
    assert await written(database, "in-flight") == 1
    assert b.token == 2


async def test_stop_returns_and_the_lease_lapses_while_the_database_blocks_it(
    database: Database, leases: Callable[[str], Lease], clock: Clock
) -> None:
    """Another transaction holds the lease row (on SQLite: the one write lock) through the
    holder's stop, as a standby's takeover on a stalled connection would: the renewal in
    flight and the release both wait on it. The stop returns anyway; the holder's writes
    fail from then on, and a standby takes the lease once it has expired."""
    a, b = leases("a"), leases("b")
    await a.start()
    granted = a.token
    async with database.transaction() as session:
        await session.execute(
            update(LeaseRow).where(LeaseRow.name == "leader").values(holder=LeaseRow.holder)
        )
        await asyncio.sleep(SETTINGS.renew_seconds * 2)  # a renewal is stuck on the lock now
        stopping = asyncio.create_task(a.stop())
        await asyncio.wait({stopping}, timeout=STOP_GUARD)
        assert stopping.done(), "stop waits on the database that blocks it"
        await stopping
        assert (a.held, a.token) == (False, None)

    with pytest.raises(LeaseLost):
        await fenced_write(database, a, "after-stop")
    assert await written(database, "after-stop") == 0
    clock.offset = timedelta(seconds=SETTINGS.ttl_seconds + 0.1)
    assert await b.try_acquire()
    assert b.token == (granted or 0) + 1
