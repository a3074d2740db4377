"""The routing last published for each model, numbered by generation, and the event that
tells the gateways it changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from flywheel_deployer.domain.policy import Strategy, VersionPolicy
from flywheel_deployer.domain.rollout import Rollout
from flywheel_deployer.domain.routing import Routing


@dataclass(frozen=True)
class RoutingChanged:
    """The gateways must be told: `state` is the model's routing, at its generation."""

    state: RoutingState


@dataclass(frozen=True)
class RoutingState:
    """The routing last published for one model, numbered by generation."""

    model: str
    routing: Routing
    strategy: Strategy
    generation: int
    rollout_id: str
    updated_at: datetime
    version_policy: VersionPolicy | None = None
    events: tuple[RoutingChanged, ...] = field(default=(), compare=False, repr=False)

    @staticmethod
    def following(current: RoutingState | None, rollout: Rollout, now: datetime) -> RoutingState:
        """The state after `rollout`'s change: `current` when the routing is the same,
        else the next generation, recording that it changed."""
        routing = rollout.routing()
        if current is not None and current.routing == routing:
            return current
        state = RoutingState(
            model=rollout.model,
            routing=routing,
            strategy=rollout.strategy,
            generation=(current.generation if current is not None else 0) + 1,
            rollout_id=rollout.rollout_id,
            updated_at=now,
            version_policy=rollout.plan.version_policy,
        )
        return replace(state, events=(RoutingChanged(state),))
