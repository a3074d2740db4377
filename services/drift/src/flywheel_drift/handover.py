"""Taking partitions over when Kafka assigns them, and where each assigned partition's
reading starts.

The database, not Kafka's committed offsets, says how far each partition was applied:
checkpoints commit there with the state they produced, while a consumer may have acked
events whose checkpoint never committed (a crash between the two). So after every
rebalance each assigned partition starts right after its last applied offset, and a
partition this group has never read starts where the reset policy puts it now, which the
database then remembers.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable

from tenacity import AsyncRetrying, wait_exponential_jitter

from flywheel_common.db import Database
from flywheel_drift import storage
from flywheel_drift.partitions import Partition, Partitions

log = logging.getLogger(__name__)

Position = Callable[[str, int], Awaitable[int | None]]
"""Where the consumer would read a (topic, partition) next, by its committed offset or
its reset policy."""


class Handover:
    def __init__(
        self,
        database: Database,
        replica: str,
        partitions: Partitions,
        stateful_topics: tuple[str, str],
    ) -> None:
        """`stateful_topics`: the two co-partitioned topics whose partition p makes
        partition p of the detector's state."""
        self._database = database
        self._replica = replica
        self._partitions = partitions
        self._stateful = stateful_topics

    async def rebalanced(
        self, assigned: Iterable[tuple[str, int]], position: Position
    ) -> dict[tuple[str, int], int]:
        """Hold exactly the partitions `assigned` carries: keep those held since before
        with nobody claiming them in between, load the others from their checkpoints, and
        forget the rest. Returns the offset each assigned (topic, partition) starts at.
        Retries while the database does not answer."""
        assigned = set(assigned)
        retrying = AsyncRetrying(
            wait=wait_exponential_jitter(multiplier=0.2, max=5.0),
            before_sleep=lambda attempt: log.warning(
                "partitions not taken over; retrying",
                extra={"error": str(attempt.outcome.exception()) if attempt.outcome else ""},
            ),
        )
        async for attempt in retrying:
            with attempt:
                for number in self._partitions.numbers() - self._numbers(assigned):
                    self._partitions.drop(number)
                for number in sorted(self._numbers(assigned)):
                    await self._take(number)
                return await self._starts(assigned, position)
        raise AssertionError("unreachable: tenacity retries until the attempt succeeds")

    def _numbers(self, assigned: set[tuple[str, int]]) -> set[int]:
        by_topic: dict[str, set[int]] = defaultdict(set)
        for topic, number in assigned:
            by_topic[topic].add(number)
        first, second = (by_topic.get(topic, set()) for topic in self._stateful)
        if first != second:
            log.error("the stateful topics are not co-partitioned in this assignment",
                      extra={"partitions": sorted(first ^ second)})  # fmt: skip
        return first | second

    async def _take(self, number: int) -> None:
        held = self._partitions.get(number)
        async with self._database.transaction() as session:
            epoch, kept = await storage.claim(
                session, number, self._replica, held.epoch if held else None
            )
            if kept and held is not None:
                held.epoch = epoch
                return
            state = await storage.load(session, number)
        self._partitions.hold(
            Partition.resumed(number, epoch, self._partitions.new_detector(), state)
        )
        log.info("partition taken over", extra={"partition": number, "epoch": epoch,
                 "versions": len(state.windows)})  # fmt: skip

    async def _starts(
        self, assigned: set[tuple[str, int]], position: Position
    ) -> dict[tuple[str, int], int]:
        async with self._database.transaction() as session:
            applied = await storage.applied(session, assigned)
            first_seen: dict[tuple[str, int], int] = {}
            for topic, number in assigned - applied.keys():
                next_offset = await position(topic, number)
                if next_offset is not None:
                    first_seen[(topic, number)] = next_offset - 1
            await storage.advance(session, first_seen)
        return {key: offset + 1 for key, offset in (applied | first_seen).items()}
