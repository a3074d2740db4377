"""A serving process's long-lived objects, kept out of the garbage collector's way.

What a process builds to serve (modules, settings, clients, a model's session) lives as long
as the process. Left in the collector's oldest generation, every full collection walks all of
it again: in a gateway serving a model, about 150,000 objects and 110-125 ms with the event
loop stopped (bench/RESULTS.md, "The heap the collector walked"). Frozen (`gc.freeze`), they are
left out of every collection; reference counting still frees them when their last reference
goes.
"""

from __future__ import annotations

import gc
import logging
import time

log = logging.getLogger(__name__)

_settling = False


def settle_in_this_process() -> None:
    """Let `settle_heap` work: a service's own process calls it. Services started inside
    another program (tests run several in one process) leave that program's heap alone, and
    a full collection of it at every start would cost them."""
    global _settling
    _settling = True


def settle_heap() -> None:
    """Collect what is garbage, then freeze everything still alive; nothing unless
    `settle_in_this_process` was called. Call it once what was built is built for good (a
    service started, a model version loaded). The frozen objects are collected again first,
    so that a cycle let go since the last call (an unloaded version's) is freed, not kept
    for good."""
    if not _settling:
        return
    started = time.perf_counter()
    gc.unfreeze()
    collected = gc.collect()
    gc.freeze()
    log.debug(
        "heap settled",
        extra={
            "frozen": gc.get_freeze_count(),
            "collected": collected,
            "ms": round((time.perf_counter() - started) * 1000, 1),
        },
    )
