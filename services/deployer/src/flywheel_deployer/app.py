"""Composition root of the deployer: settings in, a running service out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from functools import partial
from pathlib import Path

from opentelemetry import metrics

from flywheel.deployer.v1 import deployer_pb2_grpc
from flywheel_common.foundation import Foundation
from flywheel_common.grpc_server import ServiceBinding
from flywheel_common.publisher import EventPublisher
from flywheel_common.registry_client import RegistryClient
from flywheel_common.service import Component, Service, run_service
from flywheel_common.settings import ServiceSettings
from flywheel_common.table_reader import CaughtUp
from flywheel_common.topics import GATEWAY_STATUS, MODEL_EVENTS, MODEL_METRICS
from flywheel_common.wakeup import Wakeup
from flywheel_deployer.consumers import promotion_follower, window_recorder
from flywheel_deployer.engine import RolloutEngine
from flywheel_deployer.fleet import GatewayFleet
from flywheel_deployer.gauges import TrafficWeights
from flywheel_deployer.grpc_api import METHOD_ROLES, METHOD_SCOPES, SERVICE_NAME, DeployerServicer
from flywheel_deployer.handlers.ports import Deps, utc_now
from flywheel_deployer.handlers.reconcile import reconcile
from flywheel_deployer.settings import DeployerSettings
from flywheel_deployer.storage import DeployerUnitOfWork

MIGRATIONS = Path(__file__).with_name("migrations")


def build(
    settings: ServiceSettings | None = None,
    *,
    clock: Callable[[], datetime] | None = None,
    registry: RegistryClient | None = None,
    publisher: EventPublisher | None = None,
) -> Service:
    """Wire the deployer: database and outbox, gateway fleet, consumers, engine, gRPC.
    The keyword arguments replace the clock, the registry client and the Kafka publisher."""
    config = settings if isinstance(settings, DeployerSettings) else DeployerSettings()
    foundation = Foundation(config, MIGRATIONS, publisher)
    registry = registry or RegistryClient.of(config)
    wakeup = Wakeup()
    fleet = GatewayFleet(config.gateway_heartbeat_timeout_seconds, on_change=wakeup)
    weights = TrafficWeights()
    metrics.get_meter(__name__).create_observable_gauge(
        "flywheel.deployer.traffic_weight",
        callbacks=[weights.observe],
        description="Share of a model's traffic routed to each version",
    )
    deps = Deps(
        unit_of_work=partial(
            DeployerUnitOfWork, foundation.database, foundation.outbox, weights.committed
        ),
        registry=registry,
        fleet=fleet,
        wakeup=wakeup,
        clock=clock or utc_now,
    )
    # Every replica serves the API and consumes its share of events; the one holding the
    # lease moves rollouts, with writes fenced so a deposed leader cannot commit.
    leader_deps = replace(
        deps,
        unit_of_work=partial(
            DeployerUnitOfWork,
            foundation.database,
            foundation.outbox,
            weights.committed,
            fence=foundation.leader.fence,
        ),
    )
    engine = RolloutEngine(
        partial(reconcile, leader_deps),
        wakeup,
        config.reconcile_interval_seconds,
        foundation.leader,
    )
    gateway_status = foundation.table(GATEWAY_STATUS.name, fleet.apply)
    components: list[Component] = [
        *foundation.components(),
        registry,
        gateway_status,
        # Rollouts move only on a complete view of the gateways, never on a partial one.
        CaughtUp(gateway_status),
        # A first start acts on promotions and windows from now on, not on their history.
        foundation.consumer(
            [MODEL_EVENTS.name], promotion_follower(deps), group="promotions", from_beginning=False
        ),
        foundation.consumer(
            [MODEL_METRICS.name], window_recorder(deps), group="metrics", from_beginning=False
        ),
        engine,
    ]
    binding = ServiceBinding(
        SERVICE_NAME,
        deployer_pb2_grpc.add_DeployerServiceServicer_to_server,
        DeployerServicer(deps),
        METHOD_ROLES,
        METHOD_SCOPES,
    )
    return Service(config, [binding], components)


def main() -> None:
    run_service(DeployerSettings(), build)
