"""Dead letters: the original record, untouched, plus headers saying where and why it failed."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from opentelemetry import metrics

from flywheel_common.events import OutgoingRecord
from flywheel_common.topics import DLQ

log = logging.getLogger(__name__)
_dead_lettered = metrics.get_meter(__name__).create_counter(
    "flywheel.events.dead_lettered", description="Records sent to the dead-letter topic"
)

REASON = "dlq_reason"
ORIGIN_TOPIC = "dlq_topic"
ORIGIN_PARTITION = "dlq_partition"
ORIGIN_OFFSET = "dlq_offset"
CONSUMER_GROUP = "dlq_consumer_group"
FAILED_AT = "dlq_failed_at"


class Consumed(Protocol):
    """A consumed Kafka record, from aiokafka or from a faust stream."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Sequence[tuple[str, bytes]] | None: ...


class RecordSender(Protocol):
    """Where dead letters go: the service's EventPublisher, or a fake in unit tests."""

    async def send(self, records: Sequence[OutgoingRecord]) -> None: ...


def dead_letter(record: Consumed, reason: str, group_id: str) -> OutgoingRecord:
    """The DLQ record for a consumed record that could not be handled."""
    headers = list(record.headers or ())
    headers += [
        (REASON, reason.encode()),
        (ORIGIN_TOPIC, record.topic.encode()),
        (ORIGIN_PARTITION, str(record.partition).encode()),
        (ORIGIN_OFFSET, str(record.offset).encode()),
        (CONSUMER_GROUP, group_id.encode()),
        (FAILED_AT, datetime.now(UTC).isoformat().encode()),
    ]
    return OutgoingRecord(
        topic=DLQ.name, key=record.key, value=record.value or b"", headers=headers
    )


class DeadLetters:
    """The one way a consumer gives up on a record: logged, counted, sent to `flywheel.dlq`."""

    def __init__(self, sender: RecordSender, consumer: str) -> None:
        self._sender = sender
        self.consumer = consumer
        """Named in the dead letter's `dlq_consumer_group` header and the metric's labels."""

    async def send(self, record: Consumed, reason: str) -> None:
        log.warning(
            "record dead-lettered",
            extra={
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "consumer": self.consumer,
                "reason": reason,
            },
        )
        await self._sender.send([dead_letter(record, reason, self.consumer)])
        _dead_lettered.add(1, {"topic": record.topic, "group": self.consumer})
