"""Leadership by a lease in the service's own database, with a fencing token.

Replicas of a service share one database. Work that must run in one place at a time (the
outbox relay, the deployer's reconcile loop, the retrain trigger's engine) runs in the
replica that holds the work's lease: a row saying who holds it, until when, and a token
that grows by one each time the lease changes hands. The holder renews it well before it
expires; a replica killed with SIGKILL stops renewing, and a standby takes the lease once
it has expired. A replica that stops cleanly releases it, so a standby takes over at once.

Neither renewing nor stopping waits on the database past the lease's own time: an attempt
that outlasts the ttl could not grant a usable lease, and once the lease has expired a
standby may take it anyway, so a database that stalls (paused, unreachable, or a lock the
statement waits on) cannot wedge the renewing loop or hold a replica's shutdown up.

A leader that stalls past its expiry (a long pause, a lost connection) may still believe it
leads when it wakes. So every write of the leader's work checks, in its own transaction,
that the lease still carries the token this replica was granted (`fence`): the check holds
a share lock on the lease row, so a takeover either waits for that transaction to commit
or makes it fail. A deposed leader cannot commit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from sqlalchemy import BigInteger, String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from flywheel_common.db import TIMESTAMP, Base, Database
from flywheel_common.settings import LeaseSettings
from flywheel_common.timestamps import stored_utc

log = logging.getLogger(__name__)

RELEASED = datetime(1970, 1, 1, tzinfo=UTC)


class LeaseRow(Base):
    __tablename__ = "leases"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    holder: Mapped[str] = mapped_column(String(256))
    token: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class LeaseLost(Exception):
    """The lease changed hands: this replica's writes for its work no longer count."""


def utc_now() -> datetime:
    return datetime.now(UTC)


class Lease:
    """The lease `name` in `database`, wanted by the replica `holder`.

    A service component: `start` tries once (a lone replica leads at once), then a task
    renews the lease while held and tries to take it while not.
    """

    def __init__(
        self,
        database: Database,
        name: str,
        holder: str,
        settings: LeaseSettings,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self.name = name
        self.holder = holder
        self._database = database
        self._ttl = timedelta(seconds=settings.ttl_seconds)
        self._renew_seconds = settings.renew_seconds
        self._clock = clock
        self._token: int | None = None
        self._valid_until = 0.0
        self._held = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        # Database work that `stop` stopped waiting for: cancelled, finishing its cleanup
        # (a rollback) on its own; referenced here so that it is not collected half-way.
        self._left: set[asyncio.Task[None]] = set()

    @property
    def token(self) -> int | None:
        """The fencing token while this replica holds the lease; None otherwise."""
        return self._token if self.held else None

    @property
    def held(self) -> bool:
        """Held, as far as this replica can tell without asking the database (writes ask)."""
        return self._token is not None and time.monotonic() < self._valid_until

    async def wait_held(self) -> None:
        while not self.held:
            self._held.clear()
            await self._held.wait()

    async def fence(self, session: AsyncSession) -> None:
        """Fail the transaction of `session` unless this replica still holds the lease."""
        granted = self.token
        current = await session.scalar(
            select(LeaseRow.token).where(LeaseRow.name == self.name).with_for_update(read=True)
        )
        if granted is None or current != granted:
            self._lose()
            raise LeaseLost(f"lease {self.name!r} is no longer held by {self.holder}")

    async def try_acquire(self) -> bool:
        """Renew the lease if held, take it if free or expired; True when held after."""
        started = time.monotonic()
        now = self._clock()
        expires_at = now + self._ttl
        try:
            async with self._database.transaction() as session:
                row = await session.get(LeaseRow, self.name, with_for_update=True)
                if row is None:
                    row = LeaseRow(name=self.name, holder=self.holder, token=1)
                    session.add(row)
                elif row.holder == self.holder and row.token == self._token:
                    pass  # renewing
                elif stored_utc(row.expires_at) <= now:
                    row.holder, row.token = self.holder, row.token + 1
                else:
                    self._lose()
                    return False
                row.expires_at = expires_at
                token = row.token
        except IntegrityError:  # another replica created the row first
            self._lose()
            return False
        if token != self._token:
            log.info("lease acquired", extra={"lease": self.name, "token": token})
        self._token = token
        self._valid_until = started + self._ttl.total_seconds()
        self._held.set()
        return True

    async def release(self) -> None:
        """Give the lease up, so that a standby takes it without waiting for it to expire."""
        token, self._token = self._token, None
        if token is not None:
            await self._release(token)

    async def _release(self, token: int) -> None:
        async with self._database.transaction() as session:
            row = await session.get(LeaseRow, self.name, with_for_update=True)
            if row is not None and row.token == token:
                row.expires_at = RELEASED
        log.info("lease released", extra={"lease": self.name, "token": token})

    def _lose(self) -> None:
        if self._token is not None:
            log.warning("lease lost", extra={"lease": self.name, "token": self._token})
        self._token = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The renewing loop, watched by the service's supervisor."""
        return self._task

    async def start(self) -> None:
        await self._attempt()
        self._task = asyncio.create_task(self._run(), name=f"lease-{self.name}")

    async def stop(self) -> None:
        """Stop renewing and release the lease, waiting on the database no longer than the
        lease has left (one renewal period at least): by then a standby may take it anyway.

        This replica's fenced writes fail from the first line on. The renewal in flight is
        cancelled first, since it may hold the lock that the release needs; what has not
        finished by the deadline is cancelled and left to finish its rollback on its own,
        and the lease then lapses at its expiry instead of being released.
        """
        token = self.token
        deadline = max(self._valid_until, time.monotonic() + self._renew_seconds)
        self._token = None
        if self._task is not None:
            self._task.cancel()
            await self._until(deadline, self._task)
        if token is None:
            return
        release = asyncio.create_task(self._release(token), name=f"lease-{self.name}-release")
        if not await self._until(deadline, release):
            log.warning("lease not released in time; it lapses", extra={"lease": self.name})
        elif not release.cancelled() and (error := release.exception()) is not None:
            log.warning("lease not released", extra={"lease": self.name}, exc_info=error)

    async def _until(self, deadline: float, task: asyncio.Task[None]) -> bool:
        """Wait for `task` until `deadline` (monotonic); False, and `task` cancelled and
        left to finish on its own, when it has not finished by then."""
        await asyncio.wait({task}, timeout=max(0.0, deadline - time.monotonic()))
        if task.done():
            return True
        task.cancel()
        self._left.add(task)
        task.add_done_callback(self._left.discard)
        return False

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._renew_seconds)
            await self._attempt()

    async def _attempt(self) -> None:
        try:
            # Granted after the ttl, the lease would have expired already (`held`).
            async with asyncio.timeout(self._ttl.total_seconds()):
                await self.try_acquire()
        except Exception:
            # The database is unreachable or stalls: the lease lapses once `held` expires.
            log.warning("lease not renewed", extra={"lease": self.name}, exc_info=True)
