"""faust's Kafka consumer with the records of chosen topics handed over a fetch at a time.

faust makes every record an event that passes through tasks, a queue and a stream before an
agent sees it: about 100 us a record on a 2-core machine, which caps a stream near 10,000
records per second whatever its agent does (bench/RESULTS.md). Data platforms send one
prediction log or one label per record, so the drift stream's topics skip that path: the
consumer hands over the lists of records each fetch returns, as aiokafka made them. faust
keeps doing the rest: the consumer group and its rebalances (with the hooks in which the
stream claims its partitions), seeking to the committed offsets, timers. Records handed
over are never acked to faust, so faust commits no offsets of these topics: their reader
commits what it has checkpointed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypeAlias

import faust
from aiokafka import ConsumerRecord
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

Record: TypeAlias = "ConsumerRecord[bytes, bytes]"
Records: TypeAlias = Mapping[TP, Sequence[Record]]


class Fetches:
    """The fetched records of `topics`, each topic's read on its own, at most `depth`
    fetches ahead of their reader (the consumer waits for the reader beyond that, so memory
    stays bounded).

    A rebalance discards what was fetched before it: a partition may come back to this
    replica with its state loaded from a checkpoint older than those records, and reading
    them would skip the records in between. faust seeks every partition to its checkpoint
    after a rebalance, so what is discarded is fetched again.
    """

    def __init__(self, topics: Iterable[str], depth: int = 4) -> None:
        self._queues: dict[str, asyncio.Queue[tuple[int, list[Record]]]] = {
            topic: asyncio.Queue(depth) for topic in topics
        }
        self._rest: dict[str, tuple[int, list[Record]]] = {}
        """What a take left of a fetch, by topic."""
        self._rebalances = 0

    def rebalancing(self) -> None:
        """Discard what was fetched so far (the consumer's partitions are being revoked)."""
        self._rebalances += 1
        self._rest.clear()

    async def hand_over(self, records: Records) -> dict[TP, list[Any]]:
        """Keep the records of these topics; returns the others, for faust to deliver."""
        rebalances = self._rebalances
        mine: dict[str, list[Record]] = {}
        others: dict[TP, list[Any]] = {}
        for tp, batch in records.items():
            if tp.topic in self._queues:
                mine.setdefault(tp.topic, []).extend(batch)
            else:
                others[tp] = list(batch)
        for topic, fetched in mine.items():
            await self._queues[topic].put((rebalances, fetched))
        return others

    async def take(self, topic: str, most: int) -> list[Record]:
        """Up to `most` of the topic's records fetched since the last rebalance, waiting for
        a fetch if none is there (each partition's records in their order)."""
        queue = self._queues[topic]
        taken: list[Record] = []
        while len(taken) < most:
            fetch = self._rest.pop(topic, None)
            if fetch is None:
                if taken and queue.empty():
                    break
                fetch = await queue.get()  # waits only while nothing is taken
            rebalances, records = fetch
            if rebalances != self._rebalances:
                continue
            room = most - len(taken)
            if len(records) > room:
                self._rest[topic] = (rebalances, records[room:])
            taken += records[:room]
        return taken


class _FetchingConsumer(faust_aiokafka.Consumer):
    fetches: Fetches

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        records, active_partitions = await super()._wait_next_records(timeout)
        if records:
            records = await self.fetches.hand_over(records)
        return records, active_partitions

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        self.fetches.rebalancing()
        await super().on_partitions_revoked(revoked)


class _FetchingTransport(faust_aiokafka.Transport):
    def __init__(self, app: faust.App, fetches: Fetches) -> None:
        super().__init__(app.conf.broker_consumer, app)
        self._fetches = fetches

    def create_consumer(self, callback: Any, **kwargs: Any) -> _FetchingConsumer:
        consumer = _FetchingConsumer(self, callback=callback, loop=self.loop, **kwargs)
        consumer.fetches = self._fetches
        return consumer


def read_in_fetches(app: faust.App, topics: Sequence[Any]) -> Fetches:
    """Subscribe `app`'s consumer to the faust `topics`, whose records are then read from
    the returned `Fetches` (not by agents). Call before the app starts."""
    fetches = Fetches(topic.get_topic_name() for topic in topics)
    app.transport = _FetchingTransport(app, fetches)
    for topic in topics:
        app.topics.add(topic)
    return fetches
