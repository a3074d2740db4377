"""The reference profiles of one replica: each version's loaded once, ahead of its traffic
when the version is promoted, else on first sight, and shared by the detectors of every
partition the replica holds."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from flywheel.registry.v1 import events_pb2 as registry_events
from flywheel_common.consumer import Handler
from flywheel_common.errors import NotFound
from flywheel_common.events import Envelope
from flywheel_drift.profiles import ReferenceProfile

log = logging.getLogger(__name__)

Load = Callable[[str, int], Awaitable[ReferenceProfile]]
"""The version's profile from the registry; NotFound when it has no reference sample."""

DEFAULT_CAPACITY = 256


class ReferenceProfiles:
    """Profiles by (model, version), the most recently used `capacity` of them kept. A
    version with no reference sample is remembered as None; a failed load is not, so the
    next request tries again. Concurrent requests for one version share one load."""

    def __init__(self, load: Load, capacity: int = DEFAULT_CAPACITY) -> None:
        self._load = load
        self._capacity = capacity
        self._known: OrderedDict[tuple[str, int], ReferenceProfile | None] = OrderedDict()
        self._loading: dict[tuple[str, int], asyncio.Task[ReferenceProfile | None]] = {}
        self._prefetches: set[asyncio.Task[None]] = set()

    async def get(self, model: str, version: int) -> ReferenceProfile | None:
        key = (model, version)
        if key in self._known:
            self._known.move_to_end(key)
            return self._known[key]
        task = self._loading.get(key)
        if task is None:
            task = asyncio.create_task(self._fetch(key), name=f"reference:{model}:{version}")
            self._loading[key] = task
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        return await asyncio.shield(task)

    def prefetch(self, model: str, version: int) -> None:
        """Load the version's profile now, in the background, before its first window."""
        if (model, version) in self._known:
            return
        task = asyncio.create_task(self._prefetch(model, version))
        self._prefetches.add(task)
        task.add_done_callback(self._prefetches.discard)

    def __contains__(self, key: tuple[str, int]) -> bool:
        return key in self._known

    async def _prefetch(self, model: str, version: int) -> None:
        try:
            await self.get(model, version)
        except Exception as error:  # the first window's own request tries again
            log.warning(
                "reference not prefetched",
                extra={"model": model, "version": version, "error": str(error)},
            )

    async def _fetch(self, key: tuple[str, int]) -> ReferenceProfile | None:
        try:
            profile: ReferenceProfile | None = await self._load(*key)
        except NotFound:
            profile = None
        self._known[key] = profile
        while len(self._known) > self._capacity:
            self._known.popitem(last=False)
        return profile


def promotion_prefetcher(profiles: ReferenceProfiles) -> Handler:
    """flywheel.model-events: a version promoted to `production` is about to get traffic,
    so its reference is loaded before its first window closes."""

    async def handle(envelope: Envelope) -> None:
        event = envelope.message
        if isinstance(event, registry_events.ModelVersionPromoted):
            profiles.prefetch(event.model, event.version)

    return handle
