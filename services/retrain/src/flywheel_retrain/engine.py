"""The background loop that drives runs: it advances queued and interrupted runs (one task
each, `handlers.advance`) and fires schedule slots (`handlers.starts.on_schedule`), in the
replica that holds the service's lease."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from croniter import croniter

from flywheel_common.leases import Lease, LeaseLost
from flywheel_common.wakeup import Wakeup
from flywheel_retrain.domain import StaleRun
from flywheel_retrain.handlers.advance import advance
from flywheel_retrain.handlers.policies import scheduled_policies
from flywheel_retrain.handlers.ports import DataNotReady, Deps
from flywheel_retrain.handlers.queries import runs_to_execute
from flywheel_retrain.handlers.starts import on_schedule

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SCHEDULE_STARTING_DEADLINE = timedelta(minutes=5)
"""A slot missed by more than this (the service was down) is skipped, not caught up."""
RETRY_AFTER_ERROR_SECONDS = 10.0


def last_slot(cron: str, time_zone: str, now: datetime) -> datetime:
    """The latest moment at or before `now` that the cron expression names, in UTC."""
    local = now.astimezone(ZoneInfo(time_zone or "UTC"))
    previous: datetime = croniter(cron, local + timedelta(seconds=1)).get_prev(datetime)
    return previous.astimezone(UTC)


class RunTasks:
    """The runs this process executes, one task each. Built before the use cases and the
    engine: the engine starts tasks here, a cancelled run's use case stops its task (an
    executor ends its job when cancelled)."""

    def __init__(self) -> None:
        self.running: dict[str, asyncio.Task[None]] = {}

    def cancel(self, run_id: str) -> None:
        task = self.running.get(run_id)
        if task is not None:
            task.cancel()


class RunEngine:
    def __init__(
        self,
        deps: Deps,
        tasks: RunTasks,
        wakeup: Wakeup,
        max_parallel: int,
        interval: float,
        lease: Lease,
    ) -> None:
        self._lease = lease
        self._deps = deps
        self._max_parallel = max_parallel
        self._interval = interval
        self._wakeup = wakeup
        self._tasks = tasks.running
        self._retry_at: dict[str, float] = {}
        self._fired: set[tuple[str, datetime]] = set()
        self._loop: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The long-running loop, watched by the service's supervisor."""
        return self._loop

    async def start(self) -> None:
        self._loop = asyncio.create_task(self._run(), name="retrain-engine")

    async def stop(self) -> None:
        tasks = [t for t in [self._loop, *self._tasks.values()] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _run(self) -> None:
        while True:
            if not self._lease.held:
                self._stand_by()
            else:
                try:
                    await self._fire_schedules()
                    await self._start_runs()
                except LeaseLost:
                    self._stand_by()
                except Exception:
                    log.exception("the retrain engine failed a pass; retrying")
            await self._wakeup.wait(self._interval)

    def _stand_by(self) -> None:
        """Another replica leads: stop the runs this one executes (the leader resumes them
        from their stored state; their writes here would fail the lease's fence anyway)."""
        for run_id, task in list(self._tasks.items()):
            log.info("run %s handed over: another replica holds the lease", run_id)
            task.cancel()

    async def _start_runs(self) -> None:
        queued, in_progress = await runs_to_execute(self._deps)
        now = time.monotonic()
        # Interrupted runs first: they already hold a slot in their model's limit.
        for run_id in [*in_progress, *queued]:
            if len(self._tasks) >= self._max_parallel:
                return
            if run_id in self._tasks or self._retry_at.get(run_id, 0.0) > now:
                continue
            self._tasks[run_id] = asyncio.create_task(self._execute(run_id), name=f"run:{run_id}")

    async def _execute(self, run_id: str) -> None:
        try:
            await advance(self._deps, run_id)
            self._retry_at.pop(run_id, None)
        except DataNotReady as waiting:
            log.info("run %s waits for data: %s", run_id, waiting)
            self._retry_at[run_id] = time.monotonic() + waiting.retry_after.total_seconds()
        except StaleRun as moved:
            log.info("run %s stopped: %s", run_id, moved)
        except LeaseLost:
            log.info("run %s handed over: another replica holds the lease", run_id)
        except Exception:
            log.exception("run %s hit an unexpected error; it resumes shortly", run_id)
            self._retry_at[run_id] = time.monotonic() + RETRY_AFTER_ERROR_SECONDS
        finally:
            self._tasks.pop(run_id, None)
            self._wakeup()

    async def _fire_schedules(self) -> None:
        now = self._deps.clock()
        for policy in await scheduled_policies(self._deps):
            schedule = policy.schedule_trigger
            slot = last_slot(schedule.cron, schedule.time_zone, now)
            set_at = policy.updated_at or EPOCH
            if slot <= set_at or now - slot > SCHEDULE_STARTING_DEADLINE:
                continue
            if (policy.model, slot) in self._fired:
                continue
            try:
                await on_schedule(self._deps, policy.model, slot, schedule.cron)
            except Exception:
                log.exception("the schedule of %s could not start a run; retrying", policy.model)
                continue
            self._fired.add((policy.model, slot))
