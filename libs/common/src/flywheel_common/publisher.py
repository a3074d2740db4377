"""The Kafka publisher every service uses: idempotent, acks=all, compressed, traced."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
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
            max_batch_size=256 * 1024,
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
        deliveries: list[asyncio.Future[object]] = []
        unsent: list[OutgoingRecord] = []
        cause: BaseException | None = None
        for index, record in enumerate(records):
            try:
                deliveries.append(
                    await self._producer.send(
                        record.topic, value=record.value, key=record.key, headers=record.headers
                    )
                )
            except Exception as exc:
                unsent, cause = list(records[index:]), exc
                break
        results = await asyncio.gather(*deliveries, return_exceptions=True)
        failed = [
            record
            for record, result in zip(records, results, strict=False)
            if isinstance(result, BaseException)
        ]
        delivered = len(deliveries) - len(failed)
        if delivered:
            _published.add(delivered, {"topic": records[0].topic})
        if failed or unsent:
            first = next((r for r in results if isinstance(r, BaseException)), None)
            raise DeliveryFailed(failed + unsent, first or cause or RuntimeError("not sent"))
