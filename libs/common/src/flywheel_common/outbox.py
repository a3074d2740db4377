"""Transactional outbox: events are written with the state change, then relayed to Kafka."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta

from google.protobuf.message import Message
from sqlalchemy import JSON, LargeBinary, String, delete, select, update
from sqlalchemy import event as sa_event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from flywheel_common.db import ROW_ID, TIMESTAMP, Base, Database
from flywheel_common.events import OutgoingRecord
from flywheel_common.leases import Lease, LeaseLost
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import OutboxSettings
from flywheel_common.topics import TopicSpec

log = logging.getLogger(__name__)

PRUNE_INTERVAL_SECONDS = 300.0


class OutboxRow(Base):
    """One event waiting for (or done with) publication, in commit order."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    topic: Mapped[str] = mapped_column(String(249))
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    value: Mapped[bytes] = mapped_column(LargeBinary)
    # Header values are bytes; latin-1 maps each byte to one code point, so JSON keeps them.
    headers: Mapped[list[list[str]]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    published_at: Mapped[datetime | None] = mapped_column(TIMESTAMP, index=True)

    def to_record(self) -> OutgoingRecord:
        return OutgoingRecord(
            topic=self.topic,
            key=self.key,
            value=self.value,
            headers=[(name, value.encode("latin-1")) for name, value in self.headers],
        )


class Outbox:
    """Stages events inside the caller's transaction; the relay publishes them after commit."""

    def __init__(self, source: str) -> None:
        self._source = source
        self._committed = asyncio.Event()

    def stage(
        self,
        session: AsyncSession,
        topic: TopicSpec,
        message: Message,
        *,
        subject: str | None,
        key: str | bytes | None = None,
    ) -> OutgoingRecord:
        """Add the event to the session; it is published only if the transaction commits."""
        if not sa_event.contains(session.sync_session, "after_commit", self._on_commit):
            sa_event.listen(session.sync_session, "after_commit", self._on_commit, once=True)
        record = topic.record(message, source=self._source, subject=subject, key=key)
        session.add(
            OutboxRow(
                event_id=record.event_id,
                topic=record.topic,
                key=record.key,
                value=record.value,
                headers=[[name, value.decode("latin-1")] for name, value in record.headers],
                created_at=datetime.now(UTC),
            )
        )
        return record

    def _on_commit(self, _: object) -> None:
        self._committed.set()

    def wake_relay(self) -> None:
        """Tell the relay that a transaction with events has committed."""
        self._committed.set()

    async def wait_for_commit(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._committed.wait(), timeout)
        self._committed.clear()


class OutboxRelay:
    """Publishes outbox rows in commit order and marks them published.

    Every replica runs one; only the holder of the service's lease relays, so rows keep
    their commit order across replicas, and marking them published is fenced by the lease.
    A crash (or a lost lease) between publish and mark publishes those rows again with the
    same `ce_id`: delivery is at least once, and consumers dedupe on `ce_id`. Published
    rows are deleted once older than `retention`.
    """

    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        publisher: EventPublisher,
        *,
        lease: Lease | None = None,
        batch_size: int = 200,
        poll_interval_seconds: float = 1.0,
        retention: timedelta = timedelta(days=7),
    ) -> None:
        """`lease`: relay only while holding it (None: this process is the only relay)."""
        self._database = database
        self._outbox = outbox
        self._publisher = publisher
        self._lease = lease
        self._batch_size = batch_size
        self._poll_interval = poll_interval_seconds
        self._retention = retention
        self._next_prune = 0.0
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def relay_once(self) -> int:
        """Publish one batch of pending rows; returns how many were published."""
        if self._lease is not None and not self._lease.held:
            return 0
        async with self._database.transaction() as session:
            rows = (
                await session.scalars(
                    select(OutboxRow)
                    .where(OutboxRow.published_at.is_(None))
                    .order_by(OutboxRow.id)
                    .limit(self._batch_size)
                )
            ).all()
        if not rows:
            return 0
        await self._publisher.send([row.to_record() for row in rows])
        async with self._database.transaction() as session:
            if self._lease is not None:
                await self._lease.fence(session)
            await session.execute(
                update(OutboxRow)
                .where(OutboxRow.id.in_([row.id for row in rows]))
                .values(published_at=datetime.now(UTC))
            )
        return len(rows)

    async def prune(self) -> int:
        """Delete rows published longer ago than the retention period; how many."""
        async with self._database.transaction() as session:
            if self._lease is not None:
                await self._lease.fence(session)
            result = await session.execute(
                delete(OutboxRow).where(
                    OutboxRow.published_at < datetime.now(UTC) - self._retention
                )
            )
        return int(getattr(result, "rowcount", 0) or 0)

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The long-running loop, watched by the service's supervisor."""
        return self._task

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outbox-relay")

    async def stop(self) -> None:
        self._stopping.set()
        self._outbox.wake_relay()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                published = await self.relay_once()
                if published == 0 and time.monotonic() >= self._next_prune:
                    self._next_prune = time.monotonic() + PRUNE_INTERVAL_SECONDS
                    if self._lease is None or self._lease.held:
                        await self.prune()
            except LeaseLost:
                log.info("outbox relay stood down: another replica holds the lease")
                published = 0
            except Exception:
                log.exception("outbox relay failed; retrying")
                published = 0
                await asyncio.sleep(self._poll_interval)
            if published < self._batch_size:
                await self._outbox.wait_for_commit(self._poll_interval)


def relays(
    database: Database,
    outbox: Outbox,
    publisher: EventPublisher,
    settings: OutboxSettings,
    lease: Lease,
) -> list[OutboxRelay]:
    """The relay this replica runs (relaying while it holds `lease`), or none if disabled."""
    if not settings.relay_enabled:
        return []
    return [
        OutboxRelay(
            database,
            outbox,
            publisher,
            lease=lease,
            batch_size=settings.batch_size,
            poll_interval_seconds=settings.poll_interval_seconds,
            retention=timedelta(hours=settings.retention_hours),
        )
    ]
