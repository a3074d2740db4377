from collections.abc import AsyncIterator

import pytest

from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings
from flywheel_common.topics import ensure_topics


@pytest.fixture(scope="session")
async def flywheel_topics(kafka_settings: KafkaSettings) -> None:
    await ensure_topics(kafka_settings)


@pytest.fixture
async def publisher(
    kafka_settings: KafkaSettings, flywheel_topics: None
) -> AsyncIterator[EventPublisher]:
    publisher = EventPublisher(kafka_settings, source="flywheel-tests")
    await publisher.start()
    yield publisher
    await publisher.stop()
