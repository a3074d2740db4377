"""Dynamic batching: concurrent requests for one model version run as one batch."""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np
from opentelemetry import metrics

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
    arrived: float
    layout: tuple[tuple[str, tuple[int, ...], str], ...] = ()
    future: asyncio.Future[Arrays] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def __post_init__(self) -> None:
        # Requests batch together only when everything but the batch dimension agrees.
        self.layout = tuple(
            sorted((name, a.shape[1:], a.dtype.str) for name, a in self.inputs.items())
        )


_batch_rows = metrics.get_meter(__name__).create_histogram(
    "flywheel.gateway.batch.rows",
    description="Rows per model run (dynamic batches and lone requests)",
)


class DynamicBatcher:
    """Queues requests and runs them together, off the event loop.

    A request that finds the model idle runs at once. Requests arriving while the model runs
    queue up and leave as one batch as soon as the model is free again, so batches grow with
    the load and an idle model never waits. `max_queue_delay_seconds` bounds how long the
    oldest queued request waits while the model stays busy; a queue holding a full batch or
    a preferred size leaves at once. Outputs are split back by rows. When a batch fails,
    its requests run one by one so only the faulty one fails. Waiting costs one timer per
    batch, not one per request.
    """

    def __init__(
        self,
        run: RunModel,
        executor: Executor,
        policy: BatchPolicy,
        labels: dict[str, str] | None = None,
    ) -> None:
        self._run = run
        self._labels = labels or {}
        self._executor = executor
        self._policy = policy
        self._waiting: deque[_Pending] = deque()
        self._waiting_rows = 0
        self._wake: asyncio.Future[None] | None = None
        self._worker: asyncio.Task[None] | None = None
        self._running = 0  # model runs in progress, direct or batched

    async def infer(self, inputs: Arrays) -> Arrays:
        rows = next(iter(inputs.values())).shape[0] if inputs else 0
        alone = self._running == 0 and not self._waiting
        if self._policy.max_batch_size <= 1 or rows >= self._policy.max_batch_size or alone:
            # Nobody to wait for: run now. Requests arriving meanwhile queue up and batch.
            return await self._execute(inputs)
        loop = asyncio.get_running_loop()
        pending = _Pending(inputs, rows, loop.time())
        self._waiting.append(pending)
        self._waiting_rows += rows
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._work(), name="batcher")
        elif self._batch_ready():
            self._poke()
        return await pending.future

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _batch_ready(self) -> bool:
        return (
            self._waiting_rows >= self._policy.max_batch_size
            or self._waiting_rows in self._policy.preferred_batch_sizes
        )

    async def _execute(self, inputs: Arrays) -> Arrays:
        _batch_rows.record(next(iter(inputs.values())).shape[0] if inputs else 0, self._labels)
        loop = asyncio.get_running_loop()
        self._running += 1
        try:
            return await loop.run_in_executor(self._executor, self._run, inputs)
        finally:
            self._running -= 1
            if self._running == 0:
                self._poke()  # the model is free: what queued meanwhile leaves now

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        while self._waiting:
            pending = self._waiting.popleft()
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("the model version was unloaded"))

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while self._waiting:
            delay = self._waiting[0].arrived + self._policy.max_queue_delay_seconds - loop.time()
            if delay > 0 and self._running > 0 and not self._batch_ready():
                self._wake = loop.create_future()
                timer = loop.call_later(delay, _resolve, self._wake)
                try:
                    await self._wake
                finally:
                    timer.cancel()
                    self._wake = None
            await self._dispatch(self._take())

    def _take(self) -> list[_Pending]:
        """The oldest request and the later ones that fit beside it, in arrival order."""
        first = self._waiting.popleft()
        batch, rows, kept = [first], first.rows, deque[_Pending]()
        while self._waiting:
            candidate = self._waiting.popleft()
            if (
                candidate.layout == first.layout
                and rows + candidate.rows <= self._policy.max_batch_size
            ):
                batch.append(candidate)
                rows += candidate.rows
            else:
                kept.append(candidate)
        self._waiting = kept
        self._waiting_rows = sum(p.rows for p in kept)
        return batch

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


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
