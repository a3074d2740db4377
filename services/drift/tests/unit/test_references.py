"""A replica's reference profiles: loaded once per version, ahead of traffic on promotion."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import numpy as np
import pytest

from flywheel.registry.v1 import events_pb2 as registry_events
from flywheel_common.errors import NotFound, Unavailable
from flywheel_common.events import Envelope
from flywheel_drift.profiles import ReferenceProfile, build_profile
from flywheel_drift.references import ReferenceProfiles, promotion_prefetcher


class Registry:
    """Reference samples by version; counts the loads it serves."""

    def __init__(self) -> None:
        self.loads: list[tuple[str, int]] = []
        self.down = False
        self.gate = asyncio.Event()
        self.gate.set()

    async def load(self, model: str, version: int) -> ReferenceProfile:
        self.loads.append((model, version))
        await self.gate.wait()
        if self.down:
            raise Unavailable("the registry is down")
        if version == 404:
            raise NotFound(f"{model} v{version} has no reference sample")
        return build_profile(model, version, np.zeros((4, 2)))


def promoted(model: str, version: int) -> Envelope:
    message = registry_events.ModelVersionPromoted(model=model, version=version)
    return Envelope("id", "flywheel-registry", "promoted", model, datetime.now(UTC), "", message)


async def test_a_promoted_version_is_loaded_before_its_first_window_asks() -> None:
    registry = Registry()
    profiles = ReferenceProfiles(registry.load)
    await promotion_prefetcher(profiles)(promoted("iris", 2))
    await asyncio.sleep(0.01)
    assert ("iris", 2) in profiles
    profile = await profiles.get("iris", 2)
    assert profile is not None
    assert profile.version == 2
    assert registry.loads == [("iris", 2)]  # the window's request found it loaded


async def test_concurrent_requests_share_one_load_and_absent_references_are_remembered() -> None:
    registry = Registry()
    registry.gate.clear()
    profiles = ReferenceProfiles(registry.load)
    waiting = [asyncio.create_task(profiles.get("iris", 1)) for _ in range(5)]
    await asyncio.sleep(0.01)
    registry.gate.set()
    assert len({id(p) for p in await asyncio.gather(*waiting)}) == 1
    assert await profiles.get("iris", 404) is None
    assert await profiles.get("iris", 404) is None
    assert registry.loads == [("iris", 1), ("iris", 404)]


async def test_a_failed_load_is_tried_again_and_a_prefetch_failure_is_only_logged() -> None:
    registry = Registry()
    registry.down = True
    profiles = ReferenceProfiles(registry.load)
    profiles.prefetch("iris", 1)
    await asyncio.sleep(0.01)
    with pytest.raises(Unavailable):
        await profiles.get("iris", 1)
    registry.down = False
    assert await profiles.get("iris", 1) is not None
    assert registry.loads == [("iris", 1)] * 3


async def test_the_least_recently_used_profiles_go_past_the_capacity() -> None:
    registry = Registry()
    profiles = ReferenceProfiles(registry.load, capacity=2)
    for version in (1, 2, 1, 3):
        await profiles.get("iris", version)
    assert ("iris", 1) in profiles
    assert ("iris", 3) in profiles
    assert ("iris", 2) not in profiles
