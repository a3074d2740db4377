"""Follows flywheel.deployments: desired routing in, loaded versions and routing tables out."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from flywheel.common.v1 import types_pb2 as common
from flywheel.deployer.v1 import events_pb2 as deployer_events
from flywheel.deployer.v1 import types_pb2 as deployer_types
from flywheel_common.artifact_cache import ArtifactFetcher
from flywheel_common.events import Envelope
from flywheel_gateway.models import ModelManager
from flywheel_gateway.routing import Role, Route, RoutingTable

log = logging.getLogger(__name__)

_ROLES = {
    common.TRAFFIC_ROLE_STABLE: Role.STABLE,
    common.TRAFFIC_ROLE_CANARY: Role.CANARY,
    common.TRAFFIC_ROLE_ARM: Role.ARM,
    common.TRAFFIC_ROLE_SHADOW: Role.SHADOW,
    common.TRAFFIC_ROLE_PINNED: Role.PINNED,
}


def routing_table(state: deployer_events.DeploymentState) -> RoutingTable:
    policy = state.gateway_version_policy
    return RoutingTable(
        model=state.model,
        routes=tuple(
            Route(r.version, r.weight_percent, _ROLES.get(r.role, Role.STABLE), r.arm)
            for r in state.routes
        ),
        sticky_key=state.sticky_key,
        shadow_version=state.shadow.version if state.HasField("shadow") else 0,
        shadow_percent=((state.shadow.mirror_percent or 100) if state.HasField("shadow") else 0),
        keep_loaded=(
            tuple(policy.versions)
            if policy.kind == deployer_types.GATEWAY_VERSION_POLICY_KIND_SPECIFIC
            else ()
        ),
        latest_n=policy.latest_n
        if policy.kind == deployer_types.GATEWAY_VERSION_POLICY_KIND_LATEST
        else 0,
        keep_all=policy.kind == deployer_types.GATEWAY_VERSION_POLICY_KIND_ALL,
        generation=state.generation,
    )


class DeploymentFollower:
    """Applies each model's desired state: load what it needs, then route, then retire.

    A new table takes effect only once the versions it needs are warmed up (or failed), and
    versions leave only after that, draining their in-flight requests: no request fails
    because a model changed.
    """

    def __init__(
        self,
        routes: dict[str, RoutingTable],
        models: ModelManager,
        fetcher: ArtifactFetcher,
        on_applied: Callable[[], None],
    ) -> None:
        """`on_applied` is called when a routing generation takes effect."""
        self._routes = routes
        self._models = models
        self._fetcher = fetcher
        self._installing: dict[str, asyncio.Task[None]] = {}
        self.applied_generations: dict[str, int] = {}
        self.on_applied = on_applied

    async def apply(self, key: bytes, envelope: Envelope | None) -> None:
        model = key.decode()
        if envelope is None:  # tombstone: the model is no longer deployed
            installing = self._installing.pop(model, None)
            if installing is not None:
                installing.cancel()
            self._routes.pop(model, None)
            self.applied_generations.pop(model, None)
            for loaded in self._models.versions:
                if loaded.model == model:
                    self._models.retire(model, loaded.version)
            return
        state = envelope.message
        if not isinstance(state, deployer_events.DeploymentState):
            return
        table = routing_table(state)
        if table.generation and table.generation < self.applied_generations.get(model, 0):
            return  # an older decision arriving late
        previous = self._installing.pop(model, None)
        if previous is not None:
            previous.cancel()
        self._installing[model] = asyncio.create_task(self._install(table), name=f"install:{model}")

    async def _wanted(self, table: RoutingTable) -> set[int]:
        wanted = table.versions_to_load | set(table.keep_loaded)
        count = None if table.keep_all else table.latest_n
        if table.keep_all or table.latest_n:
            try:
                wanted |= set(await self._fetcher.latest_versions(table.model, count or 1000))
            except Exception:
                log.warning("cannot list versions to keep loaded", extra={"model": table.model})
        return wanted

    async def _install(self, table: RoutingTable) -> None:
        wanted = await self._wanted(table)
        loads = [task for v in wanted if (task := self._models.load(table.model, v)) is not None]
        if loads:
            await asyncio.gather(*loads, return_exceptions=True)
        self._routes[table.model] = table
        self.applied_generations[table.model] = table.generation
        self.on_applied()
        for loaded in self._models.versions:
            if loaded.model == table.model and loaded.version not in wanted:
                self._models.retire(table.model, loaded.version)
        log.info(
            "routing applied",
            extra={
                "model": table.model,
                "generation": table.generation,
                "versions": sorted(wanted),
            },
        )

    async def settled(self) -> None:
        """Wait until every routing read so far is applied (its versions warmed or failed)."""
        while pending := [task for task in self._installing.values() if not task.done()]:
            await asyncio.wait(pending)

    async def stop(self) -> None:
        for task in self._installing.values():
            task.cancel()


class RoutingSettled:
    """Start-up component placed after the deployments reader has caught up: waits until
    the routing it read is applied, every version it routes to warmed (or failed), for at
    most `timeout_seconds` (a registry that cannot be reached must not keep the replica
    from serving the models it has)."""

    def __init__(self, follower: DeploymentFollower, timeout_seconds: float = 300.0) -> None:
        self._follower = follower
        self._timeout = timeout_seconds

    async def start(self) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                await self._follower.settled()
        except TimeoutError:
            log.warning(
                "routing not settled at start-up; serving what is ready",
                extra={"timeout_seconds": self._timeout},
            )

    async def stop(self) -> None:
        return None
