"""The gateways as their heartbeats on flywheel.gateway-status describe them."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from flywheel.gateway.v1 import events_pb2 as gateway_events
from flywheel_common.events import Envelope
from flywheel_common.timestamps import epoch_seconds_of, seconds_of
from flywheel_deployer.domain import GatewayReadiness


@dataclass
class GatewayView:
    gateway_id: str
    heartbeat_at: float
    """Seconds since the epoch of the last heartbeat."""
    interval_seconds: float
    draining: bool
    ready: dict[str, set[int]] = field(default_factory=dict)
    """Per model, the versions loaded, warmed up and routable."""


class GatewayFleet:
    """Which gateways are live and what each holds ready.

    A gateway counts while its heartbeats keep coming: silent for longer than
    `heartbeat_timeout_seconds` (or three of its own intervals, if longer), or draining, it no
    longer holds a rollout back. With no live gateway at all nothing can fail a request, so
    nothing is waited for; gateways that join later load from the compacted routing topic.
    Every status applied calls `on_change`.
    """

    def __init__(
        self,
        heartbeat_timeout_seconds: float,
        on_change: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._timeout = heartbeat_timeout_seconds
        self._on_change = on_change
        self._clock = clock
        self._gateways: dict[str, GatewayView] = {}

    async def apply(self, key: bytes, envelope: Envelope | None) -> None:
        """CompactedTopicReader callback for flywheel.gateway-status."""
        gateway_id = key.decode()
        if envelope is None:
            self._gateways.pop(gateway_id, None)
        elif isinstance(envelope.message, gateway_events.GatewayStatus):
            status = envelope.message
            ready: dict[str, set[int]] = {}
            for loaded in status.versions:
                if loaded.state == gateway_events.LOAD_STATE_READY:
                    ready.setdefault(loaded.model, set()).add(loaded.version)
            self._gateways[gateway_id] = GatewayView(
                gateway_id=gateway_id,
                heartbeat_at=epoch_seconds_of(status.heartbeat_at, "heartbeat_at"),
                interval_seconds=seconds_of(status.heartbeat_interval, "heartbeat_interval"),
                draining=status.draining,
                ready=ready,
            )
        self._on_change()

    def is_live(self, gateway: GatewayView) -> bool:
        allowed = max(self._timeout, 3 * gateway.interval_seconds)
        return not gateway.draining and self._clock() - gateway.heartbeat_at <= allowed

    def live(self) -> list[GatewayView]:
        return [g for g in self._gateways.values() if self.is_live(g)]

    def pending(self, model: str, versions: set[int]) -> list[str]:
        """Live gateways that do not yet hold every one of `versions` of `model` ready."""
        return sorted(
            g.gateway_id for g in self.live() if not versions <= g.ready.get(model, set())
        )

    def readiness(self, model: str) -> list[GatewayReadiness]:
        return [
            GatewayReadiness(
                gateway_id=gateway.gateway_id,
                live=self.is_live(gateway),
                ready_versions=tuple(sorted(gateway.ready.get(model, set()))),
                heartbeat_at=gateway.heartbeat_at,
            )
            for gateway in sorted(self._gateways.values(), key=lambda g: g.gateway_id)
        ]
