"""Changing runs: the one way a run changes (`change`), and what people do to runs:
cancel one, approve or reject a candidate awaiting sign-off."""

from __future__ import annotations

from collections.abc import Callable, Collection
from datetime import datetime

from opentelemetry import metrics

from flywheel_common.auth import require_role
from flywheel_common.errors import Aborted
from flywheel_common.settings import Role
from flywheel_retrain.domain import TERMINAL, Run, RunState
from flywheel_retrain.handlers.ports import ConcurrentChange, Deps, actor, load

_runs_ended = metrics.get_meter(__name__).create_counter(
    "flywheel.retrain.runs", description="Retrain runs ended, by model and outcome"
)
CHANGE_ATTEMPTS = 5
ANY_STATE: frozenset[RunState] = frozenset(RunState)


async def change(
    deps: Deps,
    run_id: str,
    expected: Collection[RunState],
    transition: Callable[[Run, datetime], Run],
) -> Run:
    """Apply a transition to a run in one of the `expected` states (StaleRun otherwise), and
    commit it with its events. A concurrent change (CancelRun beside the engine, say) makes
    this one read the run again and check its state again rather than overwrite it."""
    for _ in range(CHANGE_ATTEMPTS):
        try:
            async with deps.unit_of_work() as uow:
                before = await load(uow, run_id)
                before.expect(*expected)
                after = transition(before, deps.clock())
                uow.runs.save(after)
        except ConcurrentChange:
            continue
        if after.state in TERMINAL and before.state not in TERMINAL:
            _runs_ended.add(1, {"model": after.model, "outcome": after.state.label})
        deps.wakeup()
        return after
    raise Aborted(f"run {run_id} kept changing under this request; retry it")


async def _model_of(deps: Deps, run_id: str) -> str:
    """The run's model, once the caller is known to hold `writer` on it."""
    async with deps.unit_of_work() as uow:
        model = (await load(uow, run_id)).model
    require_role(Role.WRITER, model)
    return model


async def cancel(deps: Deps, run_id: str, reason: str) -> Run:
    """End an unfinished run, and stop its training job if this process runs it."""
    who = actor()
    async with deps.locks(await _model_of(deps, run_id)):
        run = await change(deps, run_id, ANY_STATE, lambda r, now: r.cancel(who, reason, now))
    deps.stop_run(run_id)
    return run


async def approve(deps: Deps, run_id: str, comment: str) -> Run:
    """Sign off a candidate: it becomes `production`, then the run records it. Under the
    model's lock, so a CancelRun or RejectCandidate cannot commit in between."""
    who = actor()
    async with deps.locks(await _model_of(deps, run_id)):
        async with deps.unit_of_work() as uow:
            run = await load(uow, run_id)
        run.require_awaiting_approval()
        why = f"retrain run {run_id}: approved by {who}" + (f": {comment}" if comment else "")
        await deps.registry.promote(run.model, run.candidate_version, why)
        return await change(deps, run_id, ANY_STATE, lambda r, now: r.approve(who, comment, now))


async def reject(deps: Deps, run_id: str, reason: str) -> Run:
    who = actor()
    async with deps.locks(await _model_of(deps, run_id)):
        return await change(deps, run_id, ANY_STATE, lambda r, now: r.reject(who, reason, now))
