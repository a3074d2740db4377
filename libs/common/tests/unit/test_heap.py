"""A settled heap leaves what lives for good out of the collector's walks, and still frees
a cycle let go after it was frozen."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from flywheel_common import heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


@pytest.fixture
def settling() -> Iterator[None]:
    heap.settle_in_this_process()
    try:
        yield
    finally:
        heap._settling = False
        gc.unfreeze()


def test_outside_a_service_process_the_heap_is_left_alone() -> None:
    assert not heap._settling  # tests run services in their own process
    heap.settle_heap()
    assert gc.get_freeze_count() == 0


def test_settling_freezes_what_lives_and_frees_a_cycle_let_go_since(settling: None) -> None:
    kept = Node()
    dropped = Node()
    gone = weakref.ref(dropped)
    heap.settle_heap()
    frozen = gc.get_freeze_count()
    assert frozen > 0
    del dropped
    gc.collect()
    assert gone() is not None  # frozen: no collection looks at it
    heap.settle_heap()
    assert gone() is None  # the next settling collects the frozen ones first
    assert gc.get_freeze_count() > 0
    assert kept.me is kept
