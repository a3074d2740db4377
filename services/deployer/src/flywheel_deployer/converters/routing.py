"""Routing states as the DeploymentState the gateways follow, and gateways' readiness as
the API reports it.
"""

from __future__ import annotations

from flywheel.common.v1 import types_pb2 as common
from flywheel.deployer.v1 import events_pb2 as events
from flywheel.deployer.v1 import types_pb2 as pb
from flywheel_common.timestamps import datetime_of, epoch, timestamp
from flywheel_deployer.converters.policies import (
    STRATEGIES,
    STRATEGY_NUMBERS,
    version_policy_message,
    version_policy_of,
)
from flywheel_deployer.domain import GatewayReadiness, Role, Route, Routing, RoutingState, Strategy

ROLE_NUMBERS = {
    Role.STABLE: common.TRAFFIC_ROLE_STABLE,
    Role.CANARY: common.TRAFFIC_ROLE_CANARY,
    Role.ARM: common.TRAFFIC_ROLE_ARM,
}
ROLES = {number: role for role, number in ROLE_NUMBERS.items()}


def state_message(state: RoutingState) -> events.DeploymentState:
    routing = state.routing
    message = events.DeploymentState(
        model=state.model,
        routes=[
            pb.TrafficRoute(
                version=route.version,
                weight_percent=route.weight,
                role=ROLE_NUMBERS[route.role],
                arm=route.arm,
            )
            for route in routing.routes
        ],
        strategy=STRATEGY_NUMBERS[state.strategy],
        sticky_key=routing.sticky_key,
        generation=state.generation,
        rollout_id=state.rollout_id,
        updated_at=timestamp(state.updated_at),
    )
    if routing.shadow_version:
        message.shadow.version = routing.shadow_version
        message.shadow.mirror_percent = routing.shadow_percent
    if state.version_policy is not None:
        message.gateway_version_policy.CopyFrom(version_policy_message(state.version_policy))
    return message


def routing_of(state: events.DeploymentState) -> Routing:
    """The routing a published state describes (the inverse of `state_message`)."""
    return Routing(
        tuple(
            Route(r.version, r.weight_percent, ROLES.get(r.role, Role.STABLE), r.arm)
            for r in state.routes
        ),
        state.sticky_key,
        state.shadow.version if state.HasField("shadow") else 0,
        state.shadow.mirror_percent if state.HasField("shadow") else 0,
    )


def state_of(message: events.DeploymentState) -> RoutingState:
    return RoutingState(
        model=message.model,
        routing=routing_of(message),
        strategy=STRATEGIES.get(message.strategy, Strategy.DIRECT),
        generation=message.generation,
        rollout_id=message.rollout_id,
        updated_at=datetime_of(message.updated_at, "updated_at"),
        version_policy=(
            version_policy_of(message.gateway_version_policy)
            if message.HasField("gateway_version_policy")
            else None
        ),
    )


def readiness_message(gateway: GatewayReadiness) -> pb.GatewayReadiness:
    return pb.GatewayReadiness(
        gateway_id=gateway.gateway_id,
        live=gateway.live,
        ready_versions=list(gateway.ready_versions),
        last_heartbeat_at=epoch(gateway.heartbeat_at),
    )
