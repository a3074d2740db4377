"""Routing: which version serves a request, by weight or by a sticky key, and what is mirrored."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    STABLE = "stable"
    CANARY = "canary"
    ARM = "arm"
    SHADOW = "shadow"
    PINNED = "pinned"


@dataclass(frozen=True)
class Route:
    version: int
    weight: int
    """Share of traffic in percent."""
    role: Role = Role.STABLE
    arm: str = ""


@dataclass(frozen=True)
class RoutingTable:
    """The desired routing of one model, as the deployer published it."""

    model: str
    routes: tuple[Route, ...]
    sticky_key: str = ""
    shadow_version: int = 0
    shadow_percent: int = 0
    keep_loaded: tuple[int, ...] = ()
    """Versions kept loaded for callers that pin `model_version`."""
    latest_n: int = 0
    """Keep the newest N registered versions loaded as well (0: none)."""
    keep_all: bool = False
    generation: int = 0
    _total: int = field(init=False, repr=False, default=0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_total", sum(max(r.weight, 0) for r in self.routes))

    @property
    def serving(self) -> bool:
        return self._total > 0

    @property
    def versions_to_load(self) -> set[int]:
        """Every routed version, including those at 0%: the deployer lists a version at 0%
        so gateways load and warm it before a step sends it traffic."""
        versions = {route.version for route in self.routes}
        if self.shadow_version:
            versions.add(self.shadow_version)
        return versions

    def pick(
        self, routing_key: str | None, draw: float, ready: AbstractSet[int] | None = None
    ) -> Route:
        """The route for one request.

        With a routing key, weighted rendezvous hashing: every route scores the key, the
        highest score wins, so a key keeps its route for as long as the routes stay, and a
        weight change moves only the keys it must. Without one, `draw` in [0, 1) picks by
        weight. Routes whose version is not `ready` on this gateway are skipped, so a version
        still loading never fails a request.
        """
        candidates = [
            route
            for route in self.routes
            if route.weight > 0 and (ready is None or route.version in ready)
        ]
        if not candidates:
            raise LookupError(f"model {self.model!r} has no version taking traffic")
        if routing_key is not None:
            return max(candidates, key=lambda route: _rendezvous_score(routing_key, route))
        threshold = draw * sum(route.weight for route in candidates)
        for route in candidates:
            threshold -= route.weight
            if threshold < 0:
                return route
        return candidates[-1]

    def mirrors(self, request_id: str, draw: float) -> bool:
        """Whether this request is copied to the shadow version."""
        return bool(self.shadow_version) and draw * 100 < self.shadow_percent


def _unit_hash(text: str) -> float:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 2**64


def _rendezvous_score(key: str, route: Route) -> float:
    # -w / ln(u) makes a route win with probability proportional to its weight.
    return -route.weight / math.log(_unit_hash(f"{route.version}:{route.arm}:{key}"))
