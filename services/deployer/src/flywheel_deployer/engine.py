"""The loop that moves rollouts along: on a timer, and at once when something changed."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from flywheel_deployer.handlers import Deployer

log = logging.getLogger(__name__)


class RolloutEngine:
    """Runs `Deployer.reconcile` every `interval_seconds`, or sooner when poked.

    Gateway heartbeats, metric windows and API calls poke it, so a rollout reacts within
    one pass rather than one interval; the timer covers time-based rules (step durations,
    readiness timeouts).
    """

    def __init__(self, deployer: Deployer, interval_seconds: float) -> None:
        self._deployer = deployer
        self._interval = interval_seconds
        self._poked = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def poke(self) -> None:
        self._poked.set()

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
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._poked.wait(), self._interval)
            self._poked.clear()
            try:
                await self._deployer.reconcile()
            except Exception:
                log.exception("reconcile pass failed; retrying on the next tick")
