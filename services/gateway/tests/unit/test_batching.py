"""Dynamic batching with a numpy stand-in for the model: what runs together, what comes back."""

import asyncio
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from flywheel_gateway.batching import Arrays, BatchPolicy, DynamicBatcher


class DoublingModel:
    """Doubles its input; refuses rows holding a negative number; records each run's rows."""

    def __init__(self, seconds_per_run: float = 0.02) -> None:
        self.runs: list[int] = []
        self._seconds = seconds_per_run
        self._lock = threading.Lock()

    def __call__(self, inputs: Arrays) -> Arrays:
        features = inputs["x"]
        with self._lock:
            self.runs.append(features.shape[0])
        threading.Event().wait(self._seconds)
        if (features < 0).any():
            raise ValueError("negative input")
        return {"y": features * 2}


@pytest.fixture
async def executor() -> AsyncIterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(2)
    yield pool
    pool.shutdown(wait=True)


def rows(*values: float, width: int = 3) -> Arrays:
    return {"x": np.array([[v] * width for v in values], dtype=np.float32)}


async def test_requests_arriving_while_the_model_runs_share_one_run(
    executor: ThreadPoolExecutor,
) -> None:
    model = DoublingModel()
    batcher = DynamicBatcher(model, executor, BatchPolicy(max_batch_size=32))
    first = asyncio.create_task(batcher.infer(rows(0)))
    await asyncio.sleep(0.005)  # the first runs alone; the next ten queue behind it
    results = await asyncio.gather(*(batcher.infer(rows(n)) for n in range(1, 11)), first)
    assert model.runs == [1, 10]
    for n, result in enumerate(results[:10], start=1):
        np.testing.assert_array_equal(result["y"], rows(2 * n)["x"])


async def test_a_batch_never_exceeds_the_maximum(executor: ThreadPoolExecutor) -> None:
    model = DoublingModel()
    batcher = DynamicBatcher(model, executor, BatchPolicy(max_batch_size=4))
    first = asyncio.create_task(batcher.infer(rows(0)))
    await asyncio.sleep(0.005)
    await asyncio.gather(*(batcher.infer(rows(n, n)) for n in range(1, 6)), first)
    assert model.runs[0] == 1
    assert all(size <= 4 for size in model.runs)
    assert sum(model.runs) == 11


async def test_a_faulty_request_fails_alone(executor: ThreadPoolExecutor) -> None:
    model = DoublingModel()
    batcher = DynamicBatcher(model, executor, BatchPolicy(max_batch_size=32))
    first = asyncio.create_task(batcher.infer(rows(0)))
    await asyncio.sleep(0.005)
    results = await asyncio.gather(
        batcher.infer(rows(1)), batcher.infer(rows(-1)), batcher.infer(rows(3)), first,
        return_exceptions=True,
    )  # fmt: skip
    assert isinstance(results[1], ValueError)
    np.testing.assert_array_equal(results[0]["y"], rows(2)["x"])  # type: ignore[index]
    np.testing.assert_array_equal(results[2]["y"], rows(6)["x"])  # type: ignore[index]


async def test_inputs_of_other_shapes_run_in_their_own_batch(
    executor: ThreadPoolExecutor,
) -> None:
    model = DoublingModel()
    batcher = DynamicBatcher(model, executor, BatchPolicy(max_batch_size=32))
    first = asyncio.create_task(batcher.infer(rows(0)))
    await asyncio.sleep(0.005)
    narrow, wide, narrow_again = await asyncio.gather(
        batcher.infer(rows(1)), batcher.infer(rows(2, width=5)), batcher.infer(rows(3))
    )
    await first
    assert sorted(model.runs) == [1, 1, 2]
    assert wide["y"].shape == (1, 5)
    np.testing.assert_array_equal(narrow["y"], rows(2)["x"])
    np.testing.assert_array_equal(narrow_again["y"], rows(6)["x"])


async def test_batching_off_runs_every_request_by_itself(executor: ThreadPoolExecutor) -> None:
    model = DoublingModel(seconds_per_run=0.001)
    batcher = DynamicBatcher(model, executor, BatchPolicy(max_batch_size=1))
    await asyncio.gather(*(batcher.infer(rows(n)) for n in range(8)))
    assert model.runs == [1] * 8


async def test_a_queue_leaves_when_the_model_frees_up_not_after_the_delay(
    executor: ThreadPoolExecutor,
) -> None:
    model = DoublingModel()
    batcher = DynamicBatcher(
        model, executor, BatchPolicy(max_batch_size=32, max_queue_delay_seconds=600)
    )
    first = asyncio.create_task(batcher.infer(rows(0)))
    await asyncio.sleep(0.005)
    async with asyncio.timeout(60):  # far below the 600 s delay: the queue did not wait it out
        await asyncio.gather(*(batcher.infer(rows(n)) for n in range(1, 6)), first)
    assert model.runs == [1, 5]
