"""The unit of work a service's use cases run in: one database transaction that, when its
block ends normally, writes what the use case saved and stages the events its aggregates
recorded in the outbox, then commits; when the block raises, it rolls back.

A service subclasses `SqlUnitOfWork` with its repositories (`_open`) and what a commit
writes (`_write`); its use cases see it through a Protocol of their ports that extends
`Transaction`, so their unit tests can run on an in-memory fake.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Protocol, Self

from google.protobuf.message import Message
from sqlalchemy.ext.asyncio import AsyncSession

from flywheel_common.db import Database
from flywheel_common.inbox import claim
from flywheel_common.outbox import Outbox
from flywheel_common.topics import TopicSpec

Fence = Callable[[AsyncSession], Awaitable[None]]


class Transaction(Protocol):
    """What every unit of work offers a use case, beside its repositories."""

    async def claim(self, consumer: str, event_id: str) -> bool:
        """Record that `consumer` handled `event_id`; False when it already had."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None: ...


class SqlUnitOfWork(ABC):
    """One transaction of a service's database, with the outbox beside it."""

    session: AsyncSession

    def __init__(self, database: Database, outbox: Outbox, *, fence: Fence | None = None) -> None:
        """`fence` runs in the transaction before the write, and fails it if this replica
        may no longer write (for the leader's work: `Lease.fence`)."""
        self._database = database
        self._outbox = outbox
        self._fence = fence
        self._transaction: AbstractAsyncContextManager[AsyncSession] | None = None

    @abstractmethod
    def _open(self, session: AsyncSession) -> None:
        """Create the repositories of this transaction on `session`."""

    @abstractmethod
    async def _write(self) -> None:
        """Store what the use case saved and stage the events it recorded."""

    def _failure(self, error: BaseException) -> BaseException:
        """The error a failed write raises (a service may name a storage error its way)."""
        return error

    def _committed(self) -> None:  # noqa: B027 - a hook: most units of work need none
        """Called once the transaction has committed."""

    def _stage(self, topic: TopicSpec, message: Message, subject: str) -> None:
        self._outbox.stage(self.session, topic, message, subject=subject)

    async def claim(self, consumer: str, event_id: str) -> bool:
        return await claim(self.session, consumer, event_id)

    async def __aenter__(self) -> Self:
        self._transaction = self._database.transaction()
        self.session = await self._transaction.__aenter__()
        self._open(self.session)
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        assert self._transaction is not None, "the unit of work was not entered"
        transaction, self._transaction = self._transaction, None
        if error is None:
            try:
                if self._fence is not None:
                    await self._fence(self.session)
                await self._write()
            except BaseException as original:
                failure = self._failure(original)
                await transaction.__aexit__(type(failure), failure, failure.__traceback__)
                if failure is original:
                    raise
                raise failure from None
        await transaction.__aexit__(kind, error, traceback)
        if error is None:
            self._committed()
