"""The deployer's gauges, fed by what its units of work committed."""

from __future__ import annotations

from collections.abc import Iterable

from opentelemetry.metrics import CallbackOptions, Observation

from flywheel_deployer.domain import RoutingState


class TrafficWeights:
    """Each routed version's share of its model's traffic, as last committed."""

    def __init__(self) -> None:
        self._weights: dict[str, dict[int, int]] = {}

    def committed(self, states: Iterable[RoutingState]) -> None:
        for state in states:
            self._weights[state.model] = {
                route.version: route.weight for route in state.routing.routes
            }

    def observe(self, _: CallbackOptions) -> Iterable[Observation]:
        for model, weights in list(self._weights.items()):
            for version, weight in weights.items():
                yield Observation(weight, {"model": model, "version": str(version)})
