"""Heartbeats on flywheel.gateway-status: what this replica has loaded and whether it serves."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime

from google.protobuf.duration_pb2 import Duration

from flywheel.gateway.v1 import events_pb2 as events
from flywheel_common.publisher import EventPublisher
from flywheel_common.timestamps import now, timestamp
from flywheel_common.topics import GATEWAY_STATUS
from flywheel_common.wakeup import Wakeup
from flywheel_gateway.consumers import DeploymentFollower
from flywheel_gateway.models import LoadState, ModelManager

log = logging.getLogger(__name__)

_STATES = {
    LoadState.DOWNLOADING: events.LOAD_STATE_DOWNLOADING,
    LoadState.LOADING: events.LOAD_STATE_LOADING,
    LoadState.READY: events.LOAD_STATE_READY,
    LoadState.DRAINING: events.LOAD_STATE_DRAINING,
    LoadState.FAILED: events.LOAD_STATE_FAILED,
}


class StatusReporter:
    """Publishes GatewayStatus on every change (coalesced) and every heartbeat interval."""

    def __init__(
        self,
        publisher: EventPublisher,
        models: ModelManager,
        follower: DeploymentFollower,
        gateway_id: str,
        heartbeat_seconds: float,
        changed: Wakeup,
        address: Callable[[], str],
    ) -> None:
        """`changed` is poked by the models and the follower; `address` says where callers
        reach this replica (known once the gRPC port is bound, before this starts)."""
        self._publisher = publisher
        self._models = models
        self._follower = follower
        self._gateway_id = gateway_id
        self._heartbeat = heartbeat_seconds
        self._changed = changed
        self._started_at = datetime.now(UTC)
        self._address = address
        self._task: asyncio.Task[None] | None = None

    def snapshot(self) -> events.GatewayStatus:
        interval = Duration()
        interval.FromMilliseconds(int(self._heartbeat * 1000))
        return events.GatewayStatus(
            gateway_id=self._gateway_id,
            address=self._address(),
            ready=True,
            versions=[
                events.LoadedModelVersion(
                    model=v.model,
                    version=v.version,
                    state=_STATES[v.state],
                    artifact_sha256=v.sha256,
                    execution_provider=v.provider,
                    error=v.error,
                    state_since=timestamp(v.state_since),
                )
                for v in sorted(self._models.versions, key=lambda v: (v.model, v.version))
            ],
            applied_generations=self._follower.applied_generations,
            heartbeat_at=now(),
            heartbeat_interval=interval,
            started_at=timestamp(self._started_at),
            software_version="0.1.0",
        )

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The long-running loop, watched by the service's supervisor."""
        return self._task

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-status")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        try:
            # A replica that stops cleanly leaves the compacted topic, so the deployer and
            # `flywheel status` forget it; one that dies is aged out by its heartbeat.
            await self._publisher.tombstone(GATEWAY_STATUS, self._gateway_id)
        except Exception as exc:
            log.warning("gateway status not deleted", extra={"error": str(exc)})

    async def _publish(self) -> None:
        await self._publisher.publish(
            GATEWAY_STATUS, self.snapshot(), subject=None, key=self._gateway_id
        )

    async def _run(self) -> None:
        while True:
            try:
                await self._publish()
            except Exception as exc:
                log.warning("gateway status not published", extra={"error": str(exc)})
            await self._changed.wait(self._heartbeat)
            await asyncio.sleep(0.05)  # coalesce bursts of changes
