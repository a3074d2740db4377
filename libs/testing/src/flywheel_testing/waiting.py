"""Waiting on outcomes that another task or process produces, with a deadline."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest


async def eventually(
    condition: Callable[[], Awaitable[bool]], timeout: float = 60.0, poll: float = 0.1
) -> None:
    """Wait until `condition()` holds, checking every `poll` seconds; TimeoutError after
    `timeout` (what a test waits on is an outcome, never a fixed sleep)."""
    async with asyncio.timeout(timeout):
        # Polling on purpose: the outcome lives in another process, which sets no event here.
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(poll)


async def bounded(step: Callable[[], Awaitable[None]], seconds: float = 60.0) -> None:
    """Run a teardown step; one that hangs fails the test by name instead of timing it out."""
    try:
        async with asyncio.timeout(seconds):
            await step()
    except TimeoutError:
        pytest.fail(f"teardown step {step.__qualname__} did not finish in {seconds:.0f}s")
