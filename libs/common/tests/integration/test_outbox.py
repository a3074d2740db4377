"""The transactional outbox and idempotent consumers, against real Kafka and real databases."""

import asyncio
import signal
import sys
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from flywheel.registry.v1.events_pb2 import AliasChanged
from flywheel_common.consumer import EventConsumer
from flywheel_common.db import Database
from flywheel_common.events import Envelope, header
from flywheel_common.inbox import ProcessedEvent, deduplicated
from flywheel_common.leases import Lease
from flywheel_common.outbox import Outbox, OutboxRelay, OutboxRow
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings
from flywheel_common.topics import Cleanup, TopicSpec
from flywheel_testing.kafka import read_topic
from flywheel_testing.platform import TEST_LEASE
from flywheel_testing.plugin import NewTopicFactory

RELAY_THEN_DIE = Path(__file__).with_name("relay_then_die.py")


async def unpublished(database: Database) -> int:
    async with database.transaction() as session:
        return int(
            await session.scalar(
                select(func.count()).select_from(OutboxRow).where(OutboxRow.published_at.is_(None))
            )
            or 0
        )


async def test_rolled_back_transactions_publish_nothing(database: Database) -> None:
    outbox = Outbox("tests")
    topic = TopicSpec("unused", 1, Cleanup.DELETE, "application/protobuf", "model")
    try:
        async with database.transaction() as session:
            outbox.stage(session, topic, AliasChanged(model="iris"), subject="iris")
            raise RuntimeError("state change failed")
    except RuntimeError:
        pass
    assert await unpublished(database) == 0


async def test_relay_publishes_in_commit_order(
    database: Database,
    publisher: EventPublisher,
    new_topic: NewTopicFactory,
    kafka_bootstrap: str,
) -> None:
    topic = TopicSpec(
        await new_topic("order", partitions=3), 3, Cleanup.DELETE, "application/protobuf", "model"
    )
    outbox = Outbox("tests")
    for version in range(1, 31):
        async with database.transaction() as session:
            outbox.stage(
                session, topic, AliasChanged(model="iris", version=version), subject="iris"
            )
    relay = OutboxRelay(database, outbox, publisher, batch_size=7)
    await relay.start()
    records = await read_topic(kafka_bootstrap, topic.name, at_least=30, partitions=3)
    await relay.stop()
    versions = [AliasChanged.FromString(r.value).version for r in records]
    assert versions == list(range(1, 31))  # one key, one partition, commit order
    assert await unpublished(database) == 0


async def test_relay_killed_between_publish_and_mark_republishes_and_consumer_applies_once(
    database: Database,
    publisher: EventPublisher,
    new_topic: NewTopicFactory,
    kafka_bootstrap: str,
    kafka_settings: KafkaSettings,
    group_id: str,
) -> None:
    topic = TopicSpec(await new_topic("crash"), 1, Cleanup.DELETE, "application/protobuf", "model")
    outbox = Outbox("tests")
    async with database.transaction() as session:
        staged = outbox.stage(
            session,
            topic,
            AliasChanged(model="iris", alias="production", version=4),
            subject="iris",
        )

    relay = await asyncio.create_subprocess_exec(
        sys.executable, str(RELAY_THEN_DIE), database.url, kafka_bootstrap
    )
    assert await relay.wait() == -signal.SIGKILL
    assert await unpublished(database) == 1  # published, but never marked

    assert await OutboxRelay(database, outbox, publisher).relay_once() == 1
    assert await unpublished(database) == 0
    records = await read_topic(kafka_bootstrap, topic.name, at_least=2)
    assert [header(r.headers, "ce_id") for r in records] == [staged.event_id] * 2

    applied: list[int] = []

    async def apply(envelope: Envelope, session: AsyncSession) -> None:
        assert isinstance(envelope.message, AliasChanged)
        applied.append(envelope.message.version)

    apply_once = deduplicated(database, "alias-follower", apply)
    deliveries: list[str] = []

    async def handle(envelope: Envelope) -> None:
        await apply_once(envelope)
        deliveries.append(envelope.id)

    consumer = EventConsumer(
        kafka_settings,
        group_id=group_id,
        topics=[topic.name],
        handler=handle,
        dead_letters=publisher,
    )
    await consumer.start()
    async with asyncio.timeout(20):
        while len(deliveries) < 2:
            await asyncio.sleep(0.05)
    await consumer.stop()
    assert deliveries == [staged.event_id] * 2
    assert applied == [4]
    async with database.transaction() as session:
        assert await session.scalar(select(func.count()).select_from(ProcessedEvent)) == 1


async def test_relays_on_every_replica_take_turns_by_lease_and_keep_commit_order(
    database: Database,
    publisher: EventPublisher,
    new_topic: NewTopicFactory,
    kafka_bootstrap: str,
) -> None:
    topic = TopicSpec(
        await new_topic("replicas", partitions=3),
        3,
        Cleanup.DELETE,
        "application/protobuf",
        "model",
    )
    outbox = Outbox("tests")
    replicas = {
        name: Lease(database, "leader", name, TEST_LEASE) for name in ("replica-a", "replica-b")
    }
    relays = {
        name: OutboxRelay(database, outbox, publisher, lease=lease, batch_size=5)
        for name, lease in replicas.items()
    }
    for lease in replicas.values():
        await lease.start()
    for relay in relays.values():
        await relay.start()
    leader = next(name for name, lease in replicas.items() if lease.held)
    standby = next(name for name in replicas if name != leader)

    async def commit(versions: range) -> None:
        for version in versions:
            async with database.transaction() as session:
                outbox.stage(
                    session, topic, AliasChanged(model="iris", version=version), subject="iris"
                )
            outbox.wake_relay()

    await commit(range(1, 21))
    # The leader dies as SIGKILL would leave it: no more renewals, no release, no relay.
    replicas[leader].task.cancel()  # type: ignore[union-attr]
    relays[leader].task.cancel()  # type: ignore[union-attr]
    await commit(range(21, 41))
    async with asyncio.timeout(30):  # the standby takes over and relays the rest
        while await unpublished(database):
            await asyncio.sleep(0.1)
    await relays[standby].stop()
    await replicas[standby].stop()
    records = await read_topic(kafka_bootstrap, topic.name, at_least=40, partitions=3)

    assert replicas[standby].token is None  # released on stop
    first_seen: dict[str, int] = {}
    for record in records:
        first_seen.setdefault(
            header(record.headers, "ce_id"), AliasChanged.FromString(record.value).version
        )
    assert list(first_seen.values()) == list(range(1, 41))  # each once, in commit order
    assert await unpublished(database) == 0


async def test_published_rows_are_pruned_after_the_retention_period(
    database: Database, publisher: EventPublisher, new_topic: NewTopicFactory
) -> None:
    topic = TopicSpec(await new_topic("prune"), 1, Cleanup.DELETE, "application/protobuf", "model")
    outbox = Outbox("tests")
    for version in (1, 2):
        async with database.transaction() as session:
            outbox.stage(
                session, topic, AliasChanged(model="iris", version=version), subject="iris"
            )
    keep = OutboxRelay(database, outbox, publisher, retention=timedelta(hours=1))
    assert await keep.relay_once() == 2
    assert await keep.prune() == 0  # published just now: kept
    async with database.transaction() as session:
        outbox.stage(session, topic, AliasChanged(model="iris", version=3), subject="iris")
    assert await OutboxRelay(database, outbox, publisher, retention=timedelta(0)).prune() == 2
    async with database.transaction() as session:
        left = await session.scalar(select(func.count()).select_from(OutboxRow))
    assert left == 1  # the unpublished row stays
