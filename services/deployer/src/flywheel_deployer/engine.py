"""The loop that moves rollouts along: on a timer, and at once when something changed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from flywheel_common.leases import Lease, LeaseLost
from flywheel_common.wakeup import Wakeup

log = logging.getLogger(__name__)


class RolloutEngine:
    """Runs `reconcile` every `interval_seconds`, or sooner when its wakeup is poked, in
    the replica that holds the service's `lease` (the others stand by; `reconcile`'s
    writes are fenced by the lease, so a deposed leader's pass cannot commit).

    Gateway heartbeats, metric windows and API calls poke it, so a rollout reacts within
    one pass rather than one interval; the timer covers time-based rules (step durations,
    readiness timeouts).
    """

    def __init__(
        self,
        reconcile: Callable[[], Awaitable[None]],
        wakeup: Wakeup,
        interval_seconds: float,
        lease: Lease,
    ) -> None:
        self._lease = lease
        self._reconcile = reconcile
        self._wakeup = wakeup
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The long-running loop, watched by the service's supervisor."""
        return self._task

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="rollout-engine")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self._wakeup.wait(self._interval)
            if not self._lease.held:
                continue
            try:
                await self._reconcile()
            except LeaseLost:
                log.info("reconcile pass stopped: another replica holds the lease")
            except Exception:
                log.exception("reconcile pass failed; retrying on the next tick")
