"""The Kafka publisher every service uses: idempotent, acks=all, compressed, traced."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from google.protobuf.message import Message
from opentelemetry import metrics, trace
from opentelemetry.trace import SpanKind

from flywheel_common.events import OutgoingRecord
from flywheel_common.settings import KafkaSettings
from flywheel_common.topics import TopicSpec

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)
_published = metrics.get_meter(__name__).create_counter(
    "flywheel.events.published", description="Events acknowledged by Kafka"
)


class EventPublisher:
    """Sends CloudEvents to Kafka and returns once every in-sync replica has them."""

    def __init__(self, settings: KafkaSettings, source: str, client_id: str = "") -> None:
        self._settings = settings
        self._source = source
        self._producer = AIOKafkaProducer(
            bootstrap_servers=settings.bootstrap_servers,
            client_id=client_id or settings.client_id or source,
            enable_idempotence=True,
            acks="all",
            compression_type=None if settings.compression == "none" else settings.compression,
            linger_ms=settings.linger_ms,
            max_batch_size=256 * 1024,
        )

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

        Sends are pipelined; the idempotent producer keeps their order per partition.
        """
        deliveries = [
            await self._producer.send(
                record.topic, value=record.value, key=record.key, headers=record.headers
            )
            for record in records
        ]
        await asyncio.gather(*deliveries)
        if records:
            _published.add(len(records), {"topic": records[0].topic})
