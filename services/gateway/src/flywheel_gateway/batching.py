"""Dynamic batching: concurrent requests for one model version run as one batch."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

log = logging.getLogger(__name__)

Arrays = dict[str, np.ndarray]
RunModel = Callable[[Arrays], Arrays]


@dataclass(frozen=True)
class BatchPolicy:
    max_batch_size: int = 32
    """Largest number of rows run at once; 1 turns batching off."""
    max_queue_delay_seconds: float = 0.002
    """How long the first request of a batch may wait for company."""
    preferred_batch_sizes: tuple[int, ...] = ()
    """Sizes worth dispatching at once without waiting out the delay."""


@dataclass
class _Pending:
    inputs: Arrays
    rows: int
    future: asyncio.Future[Arrays] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    @property
    def layout(self) -> tuple[tuple[str, tuple[int, ...], str], ...]:
        """Requests batch together only when everything but the batch dimension agrees."""
        return tuple(sorted((name, a.shape[1:], a.dtype.str) for name, a in self.inputs.items()))


class DynamicBatcher:
    """Queues requests and runs them together, off the event loop.

    A request that finds the model idle runs at once. Requests arriving while the model runs
    queue up; the first of them waits at most `max_queue_delay_seconds` for company, and a
    batch leaves early when it is full or reaches a preferred size. Outputs are split back
    by rows. When a batch fails, its requests run one by one so only the faulty one fails.
    """

    def __init__(self, run: RunModel, executor: Executor, policy: BatchPolicy) -> None:
        self._run = run
        self._executor = executor
        self._policy = policy
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._running = 0  # model runs in progress, direct or batched

    async def infer(self, inputs: Arrays) -> Arrays:
        rows = next(iter(inputs.values())).shape[0] if inputs else 0
        alone = self._running == 0 and self._queue.empty()
        if self._policy.max_batch_size <= 1 or rows >= self._policy.max_batch_size or alone:
            # Nobody to wait for: run now. Requests arriving meanwhile queue up and batch.
            return await self._execute(inputs)
        pending = _Pending(inputs, rows)
        await self._queue.put(pending)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="batcher")
        return await pending.future

    async def _execute(self, inputs: Arrays) -> Arrays:
        loop = asyncio.get_running_loop()
        self._running += 1
        try:
            return await loop.run_in_executor(self._executor, self._run, inputs)
        finally:
            self._running -= 1

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._queue.empty():
            first = self._queue.get_nowait()
            batch, rows = [first], first.rows
            deadline = loop.time() + self._policy.max_queue_delay_seconds
            while rows < self._policy.max_batch_size:
                if rows in self._policy.preferred_batch_sizes and self._queue.empty():
                    break
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    candidate = await asyncio.wait_for(self._queue.get(), timeout)
                except TimeoutError:
                    break
                if (
                    candidate.layout != first.layout
                    or rows + candidate.rows > self._policy.max_batch_size
                ):
                    await self._dispatch(batch)  # incompatible or too big: start a new batch
                    batch, rows = [candidate], candidate.rows
                    first = candidate
                    deadline = loop.time() + self._policy.max_queue_delay_seconds
                    continue
                batch.append(candidate)
                rows += candidate.rows
            await self._dispatch(batch)

    async def _dispatch(self, batch: list[_Pending]) -> None:
        if len(batch) == 1:
            await self._run_alone(batch[0])
            return
        names = list(batch[0].inputs)
        joined = {name: np.concatenate([p.inputs[name] for p in batch]) for name in names}
        try:
            outputs = await self._execute(joined)
        except Exception:
            log.info("batch failed; running its requests one by one", extra={"size": len(batch)})
            await asyncio.gather(*(self._run_alone(p) for p in batch))
            return
        start = 0
        for pending in batch:
            end = start + pending.rows
            if not pending.future.done():
                pending.future.set_result({name: out[start:end] for name, out in outputs.items()})
            start = end

    async def _run_alone(self, pending: _Pending) -> None:
        try:
            result = await self._execute(pending.inputs)
        except Exception as exc:
            if not pending.future.done():
                pending.future.set_exception(exc)
            return
        if not pending.future.done():
            pending.future.set_result(result)
