"""Dead letters: the original record, untouched, plus headers saying where and why it failed."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Protocol

from flywheel_common.events import OutgoingRecord
from flywheel_common.topics import DLQ

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
