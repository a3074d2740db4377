"""In-memory stand-ins for the ports every service's use cases share, for unit tests."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Generic, Protocol, Self, TypeVar


class ClaimingStore(Protocol):
    """A fake database: whatever a service keeps, and the events its consumers handled."""

    claimed: set[tuple[str, str]]


StoreT = TypeVar("StoreT", bound=ClaimingStore)


class InMemoryUnitOfWork(ABC, Generic[StoreT]):
    """A unit of work on a `store`: entering gives fresh repositories on copies of its state
    (`_open`); a normal exit puts them back and records the events of every aggregate saved,
    as the outbox would stage them (`_commit`); an error leaves the store as it was."""

    def __init__(self, store: StoreT) -> None:
        self._store = store

    @abstractmethod
    def _open(self, store: StoreT) -> None: ...

    @abstractmethod
    def _commit(self, store: StoreT) -> None: ...

    async def __aenter__(self) -> Self:
        self._claimed = set(self._store.claimed)
        self._open(self._store)
        return self

    async def claim(self, consumer: str, event_id: str) -> bool:
        if (consumer, event_id) in self._claimed:
            return False
        self._claimed.add((consumer, event_id))
        return True

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if error is None:
            self._store.claimed = self._claimed
            self._commit(self._store)


T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
"""The moment every fake clock starts at."""


@dataclass
class FakeClock:
    """A clock that moves only when the test moves it."""

    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)
