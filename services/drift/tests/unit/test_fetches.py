"""Fetched records reach the drift stream's readers in order, in batches of at most the size
asked for, and never across a rebalance."""

from __future__ import annotations

from faust.types import TP

from flywheel_drift.fetches import Fetches


def fetch(topic: str, partition: int, offsets: range) -> dict[TP, list[tuple[str, int]]]:
    return {TP(topic, partition): [(topic, offset) for offset in offsets]}


async def test_each_topic_is_taken_in_fetch_order_at_most_a_batch_at_a_time() -> None:
    fetches = Fetches(["predictions", "labels"])
    others = await fetches.hand_over(
        fetch("predictions", 0, range(5)) | fetch("labels", 0, range(2)) | fetch("other", 0, [7])
    )
    await fetches.hand_over(fetch("predictions", 0, range(5, 8)))

    assert others == fetch("other", 0, [7])  # faust delivers those
    assert await fetches.take("predictions", 3) == [("predictions", o) for o in range(3)]
    assert await fetches.take("predictions", 4) == [("predictions", o) for o in range(3, 7)]
    assert await fetches.take("predictions", 4) == [("predictions", 7)]
    assert await fetches.take("labels", 10) == [("labels", 0), ("labels", 1)]


async def test_records_fetched_before_a_rebalance_are_never_taken_after_it() -> None:
    fetches = Fetches(["predictions"])
    await fetches.hand_over(fetch("predictions", 0, range(10)))
    assert await fetches.take("predictions", 4) == [("predictions", o) for o in range(4)]

    fetches.rebalancing()  # the rest of that fetch is discarded, and so is what was queued
    await fetches.hand_over(fetch("predictions", 0, range(2, 5)))  # fetched from the checkpoint

    assert await fetches.take("predictions", 10) == [("predictions", o) for o in range(2, 5)]
