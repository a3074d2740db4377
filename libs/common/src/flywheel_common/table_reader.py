"""Materialise a compacted topic in every replica: all partitions, from the beginning, no group."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from aiokafka import AIOKafkaConsumer, TopicPartition

from flywheel_common.events import Envelope, EventTypes, MalformedEvent, decode_event
from flywheel_common.settings import KafkaSettings
from flywheel_common.topic_scan import topic_partitions

log = logging.getLogger(__name__)

# Called with the record key and the decoded event, or None for a tombstone (deleted key).
Apply = Callable[[bytes, Envelope | None], Awaitable[None]]


class CompactedTopicReader:
    """Feeds every record of a compacted topic to `apply`, then follows new ones.

    Each replica reads the whole topic (no consumer group, no commits): the topic is the
    state, and `caught_up()` tells when the state as of start-up has been applied.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        topic: str,
        apply: Apply,
        types: EventTypes | None = None,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._apply = apply
        self._types = types or EventTypes.flywheel()
        self._consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.bootstrap_servers,
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
        backlog: dict[bytes, tuple[object, bytes | None]] = {}
        while pending:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    key = record.key or b""
                    backlog.pop(key, None)
                    backlog[key] = (record.headers, record.value)
            for partition in list(pending):
                if await self._consumer.position(partition) >= end_offsets[partition]:
                    pending.discard(partition)
        for key, (headers, value) in backlog.items():
            if value is not None:  # a key whose newest record is a tombstone never existed here
                await self._apply_record(key, headers, value)
        self._caught_up.set()
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    await self._apply_record(record.key or b"", record.headers, record.value)

    async def _apply_record(self, key: bytes, headers: object, value: bytes | None) -> None:
        if value is None:
            await self._apply(key, None)
            return
        try:
            envelope = decode_event(headers or (), value, self._types, key=key)  # type: ignore[arg-type]
        except MalformedEvent as exc:
            # Every replica reads this topic; dead-lettering from each would multiply the
            # record, so it is logged and skipped here.
            log.error("skipping malformed record", extra={"topic": self._topic, "reason": str(exc)})
            return
        try:
            await self._apply(key, envelope)
        except Exception:
            log.exception(
                "applying a record failed", extra={"topic": self._topic, "ce_id": envelope.id}
            )


class CaughtUp:
    """Start-up component placed after a reader: waits until the table as of start-up is
    applied, so what starts next (serving, a reconcile loop) never acts on a partial view."""

    def __init__(self, reader: CompactedTopicReader) -> None:
        self._reader = reader

    async def start(self) -> None:
        await self._reader.caught_up()

    async def stop(self) -> None:
        return None
