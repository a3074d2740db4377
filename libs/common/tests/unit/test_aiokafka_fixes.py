"""A consumer that a broker tells its metadata is stale refreshes it, instead of asking the
same broker again until the metadata ages out (minutes after a broker's death)."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.errors import NotLeaderForPartitionError

import flywheel_common
from flywheel_common.aiokafka_fixes import refresh_metadata_on_stale_leaders

NO_ERROR = 0


class OffsetAnswer:
    """A ListOffsets response for partition 0 of topic `t`: offset 5, or an error."""

    API_VERSION = 1

    def __init__(self, error_code: int) -> None:
        self.topics = [("t", [(0, error_code, -1, 5)])]


class Broker:
    """The client as the fetcher uses it: one broker's answers, the refreshes asked for."""

    def __init__(self, error_code: int) -> None:
        self.error_code = error_code
        self.refreshes = 0

    async def send(self, node_id: int, request: Any) -> OffsetAnswer:
        return OffsetAnswer(self.error_code)

    def force_metadata_update(self) -> None:
        self.refreshes += 1


def fetcher(client: Broker) -> Any:
    fetcher = Fetcher.__new__(Fetcher)
    fetcher._client = client
    fetcher._isolation_level = 0
    return fetcher


async def test_an_offset_request_to_a_broker_that_no_longer_leads_refreshes_the_metadata() -> None:
    assert flywheel_common  # importing the package applies the fix
    broker = Broker(NotLeaderForPartitionError.errno)
    with pytest.raises(NotLeaderForPartitionError):
        await fetcher(broker)._proc_offset_request(1, {"t": [(0, -2)]})
    assert broker.refreshes == 1


async def test_an_answered_offset_request_refreshes_nothing_and_the_fix_applies_once() -> None:
    refresh_metadata_on_stale_leaders()  # again: still one wrapper
    broker = Broker(NO_ERROR)
    offsets = await fetcher(broker)._proc_offset_request(1, {"t": [(0, -2)]})
    assert offsets == {TopicPartition("t", 0): (5, -1)}
    assert broker.refreshes == 0
