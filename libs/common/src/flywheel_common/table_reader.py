"""Materialise a compacted topic in every replica: all partitions, from the beginning, no group."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord

from flywheel_common.dead_letters import DeadLetters
from flywheel_common.events import Envelope, EventTypes, MalformedEvent, decode_event
from flywheel_common.kafka_security import kafka_client_options
from flywheel_common.settings import KafkaSettings
from flywheel_common.topic_scan import topic_partitions

log = logging.getLogger(__name__)

# Called with the record key and the decoded event, or None for a tombstone (deleted key).
Apply = Callable[[bytes, Envelope | None], Awaitable[None]]
Record: TypeAlias = ConsumerRecord[bytes, bytes]


class CompactedTopicReader:
    """Feeds every record of a compacted topic to `apply`, then follows new ones.

    Each replica reads the whole topic (no consumer group, no commits): the topic is the
    state, and `caught_up()` tells when the state as of start-up has been applied. A record
    that does not decode, or that `apply` refuses with any error, is dead-lettered under
    this reader's name and the reader goes on: one bad record never stops a replica from
    following the table.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        apply: Apply,
        dead_letters: DeadLetters,
        types: EventTypes | None = None,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._apply = apply
        self._dead_letters = dead_letters
        self._types = types or EventTypes.flywheel()
        self._consumer = AIOKafkaConsumer(
            **kafka_client_options(settings),
            client_id=settings.client_id or None,
            enable_auto_commit=False,
            group_id=None,
            isolation_level="read_committed",
        )
        self._caught_up = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        partitions = await topic_partitions(self._settings, self._topic)
        if not partitions:
            raise RuntimeError(f"topic {self._topic} does not exist; provision the topics first")
        await self._consumer.start()
        self._consumer.assign(partitions)
        await self._consumer.seek_to_beginning(*partitions)
        end_offsets = await self._consumer.end_offsets(partitions)
        self._task = asyncio.create_task(self._run(end_offsets), name=f"table:{self._topic}")

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The reading loop, watched by the service's supervisor."""
        return self._task

    async def caught_up(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(self._caught_up.wait(), timeout)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._consumer.stop()

    async def _run(self, end_offsets: dict[TopicPartition, int]) -> None:
        pending = {partition for partition, end in end_offsets.items() if end > 0}
        # Until caught up only the newest record of each key matters: keys deleted or
        # overwritten since (not yet compacted away) are never applied.
        backlog: dict[bytes | None, Record] = {}
        while pending:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    backlog.pop(record.key, None)
                    backlog[record.key] = record
            for partition in list(pending):
                if await self._consumer.position(partition) >= end_offsets[partition]:
                    pending.discard(partition)
        for record in backlog.values():
            if record.value is not None:  # a key whose newest record is a tombstone never existed
                await self._apply_record(record)
        self._caught_up.set()
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    await self._apply_record(record)

    async def _apply_record(self, record: Record) -> None:
        key = record.key or b""
        try:
            envelope = (
                None
                if record.value is None
                else decode_event(record.headers or (), record.value, self._types, key=key)
            )
        except MalformedEvent as exc:
            await self._dead_letters.send(record, f"undecodable: {exc}")
            return
        try:
            await self._apply(key, envelope)
        except Exception as exc:
            log.exception("applying a record failed", extra={"topic": self._topic})
            await self._dead_letters.send(record, f"cannot apply: {type(exc).__name__}: {exc}")


class CaughtUp:
    """Start-up component placed after a reader: waits until the table as of start-up is
    applied, so what starts next (serving, a reconcile loop) never acts on a partial view."""

    def __init__(self, reader: CompactedTopicReader) -> None:
        self._reader = reader

    async def start(self) -> None:
        await self._reader.caught_up()

    async def stop(self) -> None:
        return None
