"""The Kafka publisher every service uses: idempotent, acks=all, compressed, traced."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from google.protobuf.message import Message
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind

from flywheel_common.events import OutgoingRecord
from flywheel_common.kafka_security import kafka_client_options
from flywheel_common.settings import KafkaSettings
from flywheel_common.topics import TopicSpec

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)
_published = metrics.get_meter(__name__).create_counter(
    "flywheel.events.published", description="Events acknowledged by Kafka"
)


class DeliveryFailed(Exception):
    """Some records of a send were not acknowledged; the others were."""

    def __init__(self, failed: list[OutgoingRecord], cause: BaseException) -> None:
        super().__init__(f"{len(failed)} record(s) not delivered: {cause!r}")
        self.failed = failed
        self.cause = cause


_Handed = tuple[Sequence[OutgoingRecord], "asyncio.Future[object]"]
"""Records the producer took, and the delivery that acknowledges them together."""


class EventPublisher:
    """Sends CloudEvents to Kafka and returns once every in-sync replica has them."""

    def __init__(self, settings: KafkaSettings, source: str, client_id: str = "") -> None:
        self._settings = settings
        self._source = source
        self._client_id = client_id or settings.client_id or source
        self._producer = self._new_producer()

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **kafka_client_options(self._settings),
            client_id=self._client_id,
            enable_idempotence=True,
            acks="all",
            compression_type=(
                None if self._settings.compression == "none" else self._settings.compression
            ),
            linger_ms=self._settings.linger_ms,
            request_timeout_ms=self._settings.request_timeout_ms,
            max_batch_size=_BATCH_BYTES,
        )

    async def restart(self) -> None:
        """Continue with a new producer id.

        After sends fail (brokers gone for longer than the request timeout) the idempotent
        producer's sequence numbers no longer match the broker's, which then refuses every
        later send; a fresh producer starts a clean sequence.
        """
        old, self._producer = self._producer, self._new_producer()
        with contextlib.suppress(Exception):
            await old.stop()
        await self._producer.start()

    @property
    def source(self) -> str:
        return self._source

    async def start(self) -> None:
        await self._producer.start()

    async def stop(self) -> None:
        await self._producer.stop()

    async def publish(
        self,
        topic: TopicSpec,
        message: Message,
        *,
        subject: str | None,
        key: str | bytes | None = None,
    ) -> OutgoingRecord:
        """Encode a message as a CloudEvent for the topic and wait for the broker's ack."""
        with _tracer.start_as_current_span(f"{topic.name} publish", kind=SpanKind.PRODUCER):
            record = topic.record(message, source=self._source, subject=subject, key=key)
            await self.send([record])
        return record

    async def tombstone(self, topic: TopicSpec, key: str | bytes) -> None:
        """Delete a key from a compacted topic (a record with no value) and wait for the ack."""
        with _tracer.start_as_current_span(f"{topic.name} publish", kind=SpanKind.PRODUCER):
            await self._producer.send_and_wait(
                topic.name, value=None, key=key.encode() if isinstance(key, str) else key
            )
        _published.add(1, {"topic": topic.name})

    async def publish_many(
        self, topic: TopicSpec, events: Sequence[tuple[Message, str | None]]
    ) -> list[OutgoingRecord]:
        """Publish (message, subject) pairs in one pipelined batch under one span."""
        with _tracer.start_as_current_span(
            f"{topic.name} publish",
            kind=SpanKind.PRODUCER,
            attributes={"messaging.batch.message_count": len(events)},
        ):
            records = [
                topic.record(message, source=self._source, subject=subject)
                for message, subject in events
            ]
            await self.send(records)
        return records

    async def send(self, records: Sequence[OutgoingRecord]) -> None:
        """Send already encoded records in order and wait until all are acknowledged.

        Sends are pipelined; the idempotent producer keeps their order per partition. Raises
        DeliveryFailed naming exactly the records that were not acknowledged.
        """
        handed: list[_Handed] = []
        unsent: list[OutgoingRecord] = []
        cause: BaseException | None = None
        for index, record in enumerate(records):
            try:
                delivery = await self._producer.send(
                    record.topic, value=record.value, key=record.key, headers=record.headers
                )
            except Exception as exc:
                unsent, cause = list(records[index:]), exc
                break
            handed.append(([record], delivery))
        await self._acknowledged(handed, unsent, cause)

    async def send_in_batches(self, records: Sequence[OutgoingRecord]) -> None:
        """`send`, for many records at once: they go as one Kafka batch per partition
        built here (as full as the producer's batch size allows), each key's partition
        computed once and each batch acknowledged as a whole, where `send` costs the
        producer's partitioner, accumulator and a future per record. Records keep their
        order per partition, and keys land where `send` puts them.

        For many small sends from concurrent callers, use `send`: each call's batches
        travel alone, where `send` fills a partition's batch from all of them.
        """
        shares: dict[tuple[str, int], list[OutgoingRecord]] = {}
        partition_of: dict[tuple[str, bytes], int] = {}
        for record in records:
            if record.key is None:
                partition = await self._partition(record.topic, None)
            else:
                named = (record.topic, record.key)
                if named not in partition_of:
                    partition_of[named] = await self._partition(record.topic, record.key)
                partition = partition_of[named]
            shares.setdefault((record.topic, partition), []).append(record)
        sent: list[_Handed] = []
        unsent: list[OutgoingRecord] = []
        cause: BaseException | None = None
        for (topic, partition), share in shares.items():
            if cause is not None:
                unsent += share
                continue
            handed = 0
            try:
                async for batch, delivery in self._send_share(topic, partition, share):
                    sent.append((batch, delivery))
                    handed += len(batch)
            except Exception as exc:
                unsent, cause = share[handed:], exc
        await self._acknowledged(sent, unsent, cause)

    async def _acknowledged(
        self, handed: list[_Handed], unsent: list[OutgoingRecord], cause: BaseException | None
    ) -> None:
        """Wait for every delivery of what the producer took; DeliveryFailed names the
        records of the failed deliveries and then `unsent` (not taken, for `cause`)."""
        results = await asyncio.gather(
            *(delivery for _, delivery in handed), return_exceptions=True
        )
        failed = [
            record
            for (records, _), result in zip(handed, results, strict=True)
            if isinstance(result, BaseException)
            for record in records
        ]
        delivered = sum(len(records) for records, _ in handed) - len(failed)
        if delivered:
            _published.add(delivered, {"topic": handed[0][0][0].topic})
        if failed or unsent:
            first = next((r for r in results if isinstance(r, BaseException)), None)
            raise DeliveryFailed(failed + unsent, first or cause or RuntimeError("not sent"))

    async def _partition(self, topic: str, key: bytes | None) -> int:
        """The partition the producer's default partitioner gives `key` (any, when None)."""
        partitions = sorted(await self._producer.partitions_for(topic))
        partition: int = _PARTITIONER(key, partitions, partitions)
        return partition

    async def _send_share(
        self, topic: str, partition: int, share: list[OutgoingRecord]
    ) -> AsyncIterator[tuple[list[OutgoingRecord], asyncio.Future[object]]]:
        """Hand `share` to the producer in batches as full as its batch size allows; yields
        each batch's records with its delivery."""
        builder = self._producer.create_batch()
        batch: list[OutgoingRecord] = []
        for record in share:
            appended = builder.append(
                key=record.key, value=record.value, timestamp=None, headers=record.headers
            )
            if appended is None:  # full: a record always fits an empty batch
                yield batch, await self._producer.send_batch(builder, topic, partition=partition)
                builder, batch = self._producer.create_batch(), []
                builder.append(
                    key=record.key, value=record.value, timestamp=None, headers=record.headers
                )
            batch.append(record)
        if batch:
            yield batch, await self._producer.send_batch(builder, topic, partition=partition)


_BATCH_BYTES = 256 * 1024
"""The producer's batch size (`max_batch_size`)."""
_PARTITIONER = DefaultPartitioner()
