"""Reading runs: one (with its training log's tail), a page of them, the ones to execute."""

from __future__ import annotations

import base64
from collections import Counter
from dataclasses import dataclass

from flywheel_common.auth import require_role
from flywheel_common.errors import InvalidArgument, NotFound
from flywheel_common.settings import Role
from flywheel_retrain.domain import IN_PROGRESS, Run, RunState
from flywheel_retrain.handlers.ports import Deps, policy_of

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200


@dataclass(frozen=True)
class RunWithLog:
    run: Run
    log_tail: tuple[str, ...]
    log_truncated: bool


async def get_run(deps: Deps, run_id: str) -> Run:
    async with deps.unit_of_work() as uow:
        run = await uow.runs.get(run_id)
    if run is None:
        raise NotFound(f"no retrain run {run_id!r}")
    require_role(Role.READER, run.model)
    return run


async def run_with_log(deps: Deps, run_id: str, lines: int) -> RunWithLog:
    """The run and the last `lines` lines of its training log (0: the default count)."""
    run = await get_run(deps, run_id)
    tail, truncated = await deps.training.log_tail(run_id, lines)
    return RunWithLog(run, tail, truncated)


async def list_runs(
    deps: Deps, model: str, states: tuple[RunState, ...], page_size: int, page_token: str
) -> tuple[list[Run], str]:
    """A page of runs, newest first, and the token of the next page ("" at the end)."""
    if page_size < 0:
        raise InvalidArgument("page_size cannot be negative")
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    offset = _offset(page_token)
    async with deps.unit_of_work() as uow:
        runs = await uow.runs.page(model, states, offset, size + 1)
    token = _token(offset + size) if len(runs) > size else ""
    return runs[:size], token


async def runs_to_execute(deps: Deps) -> tuple[list[str], list[str]]:
    """(queued runs that may start, oldest first; runs in progress: interrupted by a restart
    or an error, or running now). A queued run waits while its model has as many runs in
    progress or awaiting sign-off as its policy allows: it was queued behind them."""
    async with deps.unit_of_work() as uow:
        queued = await uow.runs.ids_in([RunState.QUEUED])
        in_progress = await uow.runs.ids_in(IN_PROGRESS)
        awaiting = await uow.runs.ids_in([RunState.AWAITING_APPROVAL])
        busy = Counter(model for _, model in [*in_progress, *awaiting])
        startable = []
        for run_id, model in queued:
            if busy[model] < max((await policy_of(uow, model)).max_concurrent_runs, 1):
                startable.append(run_id)
                busy[model] += 1
    return startable, [run_id for run_id, _ in in_progress]


def _offset(token: str) -> int:
    if not token:
        return 0
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode())
    except ValueError:
        raise InvalidArgument("page_token is not a token this server returned") from None


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode()
