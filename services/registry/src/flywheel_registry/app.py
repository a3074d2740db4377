"""Composition root of the registry: settings in, a running service out."""

from __future__ import annotations

from pathlib import Path

from flywheel.registry.v1 import registry_pb2_grpc
from flywheel_common.consumer import EventConsumer
from flywheel_common.db import Database
from flywheel_common.grpc_server import ServiceBinding
from flywheel_common.inbox import deduplicated
from flywheel_common.migrations import SchemaMigration
from flywheel_common.outbox import Outbox, relays
from flywheel_common.publisher import EventPublisher
from flywheel_common.service import Component, Service, TopicProvisioner, run_service
from flywheel_common.settings import ServiceSettings
from flywheel_common.topics import DEPLOYMENT_EVENTS
from flywheel_registry.artifacts import LocalBlobStore
from flywheel_registry.consumers import CONSUMER_NAME, rollback_follower
from flywheel_registry.grpc_api import METHOD_ROLES, SERVICE_NAME, RegistryServicer
from flywheel_registry.handlers import Registry, RegistryLimits
from flywheel_registry.onnx_validation import OnnxValidator
from flywheel_registry.settings import RegistrySettings

MIGRATIONS = Path(__file__).with_name("migrations")


def build(settings: ServiceSettings | None = None) -> Service:
    """Wire the registry: database and artifacts, outbox relay, rollback follower, gRPC."""
    config = settings if isinstance(settings, RegistrySettings) else RegistrySettings()
    database = Database(config.database_url(), config.database.echo)
    outbox = Outbox(source=config.service_name)
    validator = OnnxValidator(config.validation_timeout_seconds)
    registry = Registry(
        database,
        LocalBlobStore(config.artifact_folder()),
        outbox,
        validator,
        RegistryLimits(
            max_artifact_bytes=config.max_artifact_bytes,
            max_reference_sample_bytes=config.max_reference_sample_bytes,
            default_protected_aliases=frozenset(config.protected_aliases),
            chunk_bytes=config.download_chunk_bytes,
        ),
    )
    publisher = EventPublisher(config.kafka, source=config.service_name)
    components: list[Component] = []
    if config.kafka.provision_topics:
        components.append(TopicProvisioner(config))
    components += [
        SchemaMigration(database, MIGRATIONS),
        validator,
        publisher,
    ]
    components += relays(database, outbox, publisher, config.outbox)
    components.append(
        EventConsumer(
            config.kafka,
            group_id=config.consumer_group or config.service_name,
            topics=[DEPLOYMENT_EVENTS.name],
            handler=deduplicated(database, CONSUMER_NAME, rollback_follower(registry)),
            dead_letters=publisher,
        )
    )
    binding = ServiceBinding(
        SERVICE_NAME,
        registry_pb2_grpc.add_RegistryServiceServicer_to_server,
        RegistryServicer(registry),
        METHOD_ROLES,
    )
    return Service(config, [binding], components)


def main() -> None:
    run_service(RegistrySettings(), build)
