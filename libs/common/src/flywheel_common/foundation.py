"""The standard components every service stands on: topics, its database and outbox, Kafka."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from flywheel_common.consumer import EventConsumer, Handler
from flywheel_common.db import Database
from flywheel_common.dead_letters import DeadLetters
from flywheel_common.leases import Lease
from flywheel_common.migrations import SchemaMigration
from flywheel_common.outbox import Outbox, relays
from flywheel_common.publisher import EventPublisher
from flywheel_common.service import Component, TopicProvisioner, instance_id
from flywheel_common.settings import ServiceSettings, WithConsumerGroup, WithDatabase
from flywheel_common.table_reader import Apply, CompactedTopicReader

LEADER_LEASE = "leader"


class Foundation:
    """What a service's composition root builds first and starts first.

    Its components start in this order: topic provisioning (when enabled), the schema
    migration, the leader lease, the publisher, then the outbox relay; the service's own
    components follow.
    Consumers and table readers made here dead-letter through the same publisher.
    """

    def __init__(
        self,
        settings: ServiceSettings,
        migrations: Path | None = None,
        publisher: EventPublisher | None = None,
    ) -> None:
        """`migrations` is the service's Alembic folder; a service with settings
        `WithDatabase` gets its database and outbox."""
        self.settings = settings
        self.publisher = publisher or EventPublisher(settings.kafka, source=settings.service_name)
        self._database: Database | None = None
        self._outbox: Outbox | None = None
        self._leader: Lease | None = None
        if isinstance(settings, WithDatabase):
            self._database = Database(settings.database_url(), settings.database.echo)
            self._outbox = Outbox(source=settings.service_name)
            self._leader = Lease(
                self._database, LEADER_LEASE, instance_id(settings), settings.lease
            )
        self._migrations = migrations

    @property
    def database(self) -> Database:
        if self._database is None:
            raise TypeError(f"{type(self.settings).__name__} has no database (WithDatabase)")
        return self._database

    @property
    def outbox(self) -> Outbox:
        if self._outbox is None:
            raise TypeError(f"{type(self.settings).__name__} has no outbox (WithDatabase)")
        return self._outbox

    @property
    def leader(self) -> Lease:
        """The lease of the work one replica does at a time: the outbox relay and the
        service's own loops. Fence their writes with `leader.fence`."""
        if self._leader is None:
            raise TypeError(f"{type(self.settings).__name__} has no database (WithDatabase)")
        return self._leader

    def components(self) -> list[Component]:
        settings = self.settings
        components: list[Component] = []
        if settings.kafka.provision_topics:
            components.append(TopicProvisioner(settings))
        if self._database is not None and self._migrations is not None:
            components.append(SchemaMigration(self._database, self._migrations))
        if self._leader is not None:
            components.append(self._leader)
        components.append(self.publisher)
        if self._outbox is not None and isinstance(settings, WithDatabase):
            components += relays(
                self.database, self._outbox, self.publisher, settings.outbox, self.leader
            )
        return components

    def consumer(
        self,
        topics: Sequence[str],
        handler: Handler,
        *,
        group: str = "",
        from_beginning: bool = True,
    ) -> EventConsumer:
        """A consumer in the service's group (`group` names one of several: "alerts")."""
        settings = self.settings
        group_id = (
            settings.group(group)
            if isinstance(settings, WithConsumerGroup)
            else settings.service_name
        )
        return EventConsumer(
            settings.kafka,
            group_id=group_id,
            topics=topics,
            handler=handler,
            dead_letters=self.publisher,
            from_beginning=from_beginning,
        )

    def table(self, topic: str, apply: Apply, replica: str = "") -> CompactedTopicReader:
        """A compacted topic read whole by this replica; what it cannot apply is
        dead-lettered under the name `<service>.<replica>.<topic>`."""
        name = f"{self.settings.service_name}.{replica or instance_id(self.settings)}.{topic}"
        return CompactedTopicReader(
            self.settings.kafka, topic, apply, DeadLetters(self.publisher, name)
        )
