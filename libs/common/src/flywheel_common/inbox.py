"""Idempotent consumers: an event's effect and the record of its `ce_id` commit together."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from flywheel_common.consumer import Handler
from flywheel_common.db import TIMESTAMP, Base, Database
from flywheel_common.events import Envelope


class ProcessedEvent(Base):
    __tablename__ = "processed_events"

    consumer: Mapped[str] = mapped_column(String(128), primary_key=True)
    event_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    processed_at: Mapped[datetime] = mapped_column(TIMESTAMP)


async def claim(session: AsyncSession, consumer: str, event_id: str) -> bool:
    """Record the event as processed; False when it already was.

    Run it in the transaction that applies the event: if that transaction rolls back, so
    does the claim, and a concurrent duplicate fails on the primary key at commit.
    """
    seen = await session.scalar(
        select(ProcessedEvent.event_id).where(
            ProcessedEvent.consumer == consumer, ProcessedEvent.event_id == event_id
        )
    )
    if seen is not None:
        return False
    session.add(
        ProcessedEvent(consumer=consumer, event_id=event_id, processed_at=datetime.now(UTC))
    )
    return True


TransactionalHandler = Callable[[Envelope, AsyncSession], Awaitable[None]]


def deduplicated(database: Database, consumer: str, handler: TransactionalHandler) -> Handler:
    """A consumer handler that applies each `ce_id` once, in one transaction with its effect."""

    async def handle(envelope: Envelope) -> None:
        async with database.transaction() as session:
            if await claim(session, consumer, envelope.id):
                await handler(envelope, session)

    return handle
