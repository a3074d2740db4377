"""Composition root of the deployer: settings in, a running service out."""

from __future__ import annotations

from pathlib import Path

from opentelemetry import metrics

from flywheel.deployer.v1 import deployer_pb2_grpc
from flywheel_common.consumer import EventConsumer
from flywheel_common.db import Database
from flywheel_common.dead_letters import DeadLetters
from flywheel_common.grpc_server import ServiceBinding
from flywheel_common.inbox import deduplicated
from flywheel_common.migrations import SchemaMigration
from flywheel_common.outbox import Outbox, relays
from flywheel_common.publisher import EventPublisher
from flywheel_common.registry_client import RegistryClient
from flywheel_common.service import (
    Component,
    Service,
    TopicProvisioner,
    instance_id,
    run_service,
)
from flywheel_common.settings import ServiceSettings
from flywheel_common.table_reader import CaughtUp, CompactedTopicReader
from flywheel_common.topics import GATEWAY_STATUS, MODEL_EVENTS, MODEL_METRICS
from flywheel_deployer.consumers import (
    METRICS_CONSUMER,
    promotion_follower,
    window_recorder,
)
from flywheel_deployer.engine import RolloutEngine
from flywheel_deployer.fleet import GatewayFleet
from flywheel_deployer.grpc_api import METHOD_ROLES, SERVICE_NAME, DeployerServicer
from flywheel_deployer.handlers import Deployer
from flywheel_deployer.settings import DeployerSettings

MIGRATIONS = Path(__file__).with_name("migrations")


def build(settings: ServiceSettings | None = None) -> Service:
    """Wire the deployer: database and outbox, gateway fleet, consumers, engine, gRPC."""
    config = settings if isinstance(settings, DeployerSettings) else DeployerSettings()
    database = Database(config.database_url(), config.database.echo)
    outbox = Outbox(source=config.service_name)
    registry = RegistryClient(config.registry_address, config.registry_token)
    fleet = GatewayFleet(config.gateway_heartbeat_timeout_seconds)
    deployer = Deployer(database, outbox, registry, fleet)
    metrics.get_meter(__name__).create_observable_gauge(
        "flywheel.deployer.traffic_weight",
        callbacks=[deployer.traffic_weights],
        description="Share of a model's traffic routed to each version",
    )
    engine = RolloutEngine(deployer, config.reconcile_interval_seconds)
    fleet.on_change = engine.poke
    deployer.on_change = engine.poke
    publisher = EventPublisher(config.kafka, source=config.service_name)
    group = config.consumer_group or config.service_name

    components: list[Component] = []
    if config.kafka.provision_topics:
        components.append(TopicProvisioner(config))
    components += [SchemaMigration(database, MIGRATIONS), registry, publisher]
    components += relays(database, outbox, publisher, config.outbox)
    gateway_status = CompactedTopicReader(
        config.kafka,
        GATEWAY_STATUS.name,
        fleet.apply,
        DeadLetters(publisher, f"{group}.{instance_id(config)}.gateway-status"),
    )
    components += [
        gateway_status,
        # Rollouts move only on a complete view of the gateways, never on a partial one.
        CaughtUp(gateway_status),
        EventConsumer(
            config.kafka,
            group_id=f"{group}.promotions",
            topics=[MODEL_EVENTS.name],
            handler=promotion_follower(deployer),
            dead_letters=publisher,
            # A first start acts on promotions from now on, not on the topic's history.
            from_beginning=False,
        ),
        EventConsumer(
            config.kafka,
            group_id=f"{group}.metrics",
            topics=[MODEL_METRICS.name],
            handler=deduplicated(database, METRICS_CONSUMER, window_recorder(deployer)),
            dead_letters=publisher,
            from_beginning=False,
        ),
        engine,
    ]
    binding = ServiceBinding(
        SERVICE_NAME,
        deployer_pb2_grpc.add_DeployerServiceServicer_to_server,
        DeployerServicer(deployer),
        METHOD_ROLES,
    )
    return Service(config, [binding], components)


def main() -> None:
    run_service(DeployerSettings(), build)
