"""Where the Kafka client library recovers from a broker fault slower than Kafka's own
clients, and the fix Flywheel applies when it is imported.

aiokafka 0.14's consumer asks a partition's leader, as its cached metadata names it, for the
offset to start from when it was assigned a partition its group never committed. When that
broker no longer leads (it died, or leadership moved back after it returned), the answer
NOT_LEADER_FOR_PARTITION is retried against the same broker every 100 ms without refreshing
the metadata, until the metadata ages out (`metadata_max_age_ms`, 5 minutes): a replica that
took such a partition over from a killed one read nothing from it for minutes. Kafka's Java
consumer refreshes its metadata at once (KAFKA-9535); so does this fix.
"""

from __future__ import annotations

from typing import Any

from aiokafka.consumer.fetcher import Fetcher
from aiokafka.errors import KafkaError

_FIXED = "_flywheel_refreshes_metadata"


def refresh_metadata_on_stale_leaders() -> None:
    """Make the consumer's offset requests refresh the metadata when a broker answers that
    it is stale (not the leader, unknown partition, leader unavailable). Idempotent."""
    original = Fetcher._proc_offset_request
    if getattr(original, _FIXED, False):
        return

    async def proc_offset_request(self: Any, node_id: int, topic_data: Any) -> Any:
        try:
            return await original(self, node_id, topic_data)
        except KafkaError as error:
            if error.invalid_metadata:
                self._client.force_metadata_update()
            raise

    setattr(proc_offset_request, _FIXED, True)
    Fetcher._proc_offset_request = proc_offset_request
