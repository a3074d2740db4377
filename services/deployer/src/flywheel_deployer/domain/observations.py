"""What the deployer observes of the world: gateways' readiness and versions' metric
windows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flywheel_deployer.analysis import Window


@dataclass(frozen=True)
class MetricWindow:
    """One window of one version's metrics, as the drift detector summarised it."""

    model: str
    version: int
    start: datetime
    end: datetime
    summary: Window


@dataclass(frozen=True)
class GatewayReadiness:
    """What one gateway holds ready of one model."""

    gateway_id: str
    live: bool
    ready_versions: tuple[int, ...]
    heartbeat_at: float
    """Seconds since the epoch of its last heartbeat."""
