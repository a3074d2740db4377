"""A nudge from the code that changed something to the loop that reacts to it."""

from __future__ import annotations

import asyncio
import contextlib


class Wakeup:
    """Built before both sides, so neither is wired to the other after construction: the
    changers call it, the loop waits on it. Pokes while the loop is busy coalesce into one."""

    def __init__(self) -> None:
        self._poked = asyncio.Event()

    def __call__(self) -> None:
        self._poked.set()

    async def wait(self, timeout: float) -> None:
        """Return when poked, or after `timeout` seconds; either way the poke is consumed."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._poked.wait(), timeout)
        self._poked.clear()
