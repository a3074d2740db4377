"""A model's desired routing: the weighted routes, sticky key and mirror gateways apply."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    STABLE = "stable"
    CANARY = "canary"
    ARM = "arm"


@dataclass(frozen=True)
class Route:
    version: int
    weight: int
    role: Role = Role.STABLE
    arm: str = ""


@dataclass(frozen=True)
class Routing:
    """The desired routing of one model: weighted routes (0% means loaded, no traffic)."""

    routes: tuple[Route, ...] = ()
    sticky_key: str = ""
    shadow_version: int = 0
    shadow_percent: int = 0

    @property
    def versions(self) -> set[int]:
        found = {route.version for route in self.routes}
        if self.shadow_version:
            found.add(self.shadow_version)
        return found

    @property
    def serving_version(self) -> int:
        """The version with the most traffic (0 when nothing is routed)."""
        taking = [route for route in self.routes if route.weight > 0]
        return max(taking, key=lambda route: route.weight).version if taking else 0
