"""The event loop every Flywheel process runs on: uvloop's, unless asyncio's own is chosen."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Any, TypeVar

import uvloop

T = TypeVar("T")


class EventLoop(StrEnum):
    UVLOOP = "uvloop"
    """libuv's loop, with its scheduling, timers and socket I/O written in C: the gateway
    spends 7-9% less CPU per request on it than on asyncio's own (bench/RESULTS.md)."""
    ASYNCIO = "asyncio"
    """The standard library's loop: to rule uvloop out when chasing a bug."""


def loop_factory(choice: EventLoop) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """What `asyncio.Runner` makes its loop with (None: asyncio's default)."""
    return uvloop.new_event_loop if choice is EventLoop.UVLOOP else None


def run(main: Coroutine[Any, Any, T], choice: EventLoop = EventLoop.UVLOOP) -> T:
    """`asyncio.run(main)`, on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory(choice)) as runner:
        return runner.run(main)
