"""The engine's use case: take a run as far as it goes, one step after another (data,
training, gate, decision).

Each step starts from what the run has recorded, so a run interrupted by a restart resumes
where it stopped: a prepared dataset is not prepared again (unless the run resumes on
another replica, which cannot read the files of the one that prepared it), an interrupted
training attempt counts, and a recorded gate verdict is acted on instead of evaluated again.
"""

from __future__ import annotations

import logging

from opentelemetry import trace

from flywheel_common.errors import FlywheelError, Unavailable
from flywheel_common.telemetry import trace_context
from flywheel_retrain.domain import (
    IN_PROGRESS,
    SYSTEM_ACTOR,
    FailureStage,
    Run,
    RunState,
    StaleRun,
)
from flywheel_retrain.handlers.ports import DataNotReady, Deps, RunFailed, load
from flywheel_retrain.handlers.runs import change

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)


async def advance(deps: Deps, run_id: str) -> None:
    """Unavailable (the registry or the broker is down), StaleRun (the run moved on,
    cancelled say) and DataNotReady (the run waits for rows) propagate, so the engine
    resumes, drops or postpones the run; any other error ends the run FAILED, naming the
    stage it happened in."""
    async with deps.unit_of_work() as uow:
        run = await load(uow, run_id)
    # Each step of the run is a span of its cause's trace: a drift alert's continues the
    # request whose window drifted, through the training job to the promotion.
    with _tracer.start_as_current_span(
        "retrain run",
        context=trace_context(run.trigger.traceparent),
        attributes={"flywheel.model": run.model, "flywheel.run_id": run.run_id},
    ):
        await _advance(deps, run)


async def _advance(deps: Deps, run: Run) -> None:
    run_id = run.run_id
    stage = FailureStage.DATA
    try:
        if await _cancelled_as_outdated(deps, run):
            return
        resumed = run.state is RunState.TRAINING
        if run.state in (RunState.QUEUED, RunState.PREPARING_DATA):
            run = await prepare_data(deps, run)
        elif _reads_data(run) and not deps.data.present(run):
            run = await prepare_data_again(deps, run)
        stage = FailureStage.TRAINING
        if run.state is RunState.TRAINING:
            run = await train(deps, run, resumed=resumed)
        stage = FailureStage.GATING
        if run.state is RunState.GATING:
            await gate(deps, run)
    except RunFailed as failure:
        await fail(deps, run_id, failure.stage, str(failure))
    except (Unavailable, StaleRun, DataNotReady):
        raise
    except (FlywheelError, ValueError) as error:
        await fail(deps, run_id, stage, str(error))


async def _cancelled_as_outdated(deps: Deps, run: Run) -> bool:
    """A queued follow-up of a version that a newer change's run has replaced since: it
    would learn the older concept again, so it ends cancelled instead of starting."""
    if not run.queued_follow_up:
        return False
    production = await deps.registry.production(run.model)
    reason = run.follows_up_a_replaced_version(production.version if production else None)
    if reason is None:
        return False
    log.info("run %s cancelled: %s", run.run_id, reason)
    await change(
        deps, run.run_id, (RunState.QUEUED,), lambda r, now: r.cancel(SYSTEM_ACTOR, reason, now)
    )
    return True


async def prepare_data(deps: Deps, run: Run) -> Run:
    """QUEUED or PREPARING_DATA: write the dataset and holdout, then on to TRAINING; or
    wait for the rows the policy asks for (DataNotReady)."""
    expected = (RunState.QUEUED, RunState.PREPARING_DATA)
    run = await change(deps, run.run_id, expected, lambda r, now: r.prepare_data(now))
    now = deps.clock()
    prepared = await deps.data.prepare(run, now, min_rows=run.rows_to_wait_for(now))
    return await change(
        deps,
        run.run_id,
        (RunState.PREPARING_DATA,),
        lambda r, now: r.data_ready(prepared.dataset, prepared.holdout_path, now),
    )


def _reads_data(run: Run) -> bool:
    """Whether the run's next step reads its dataset or holdout."""
    return run.state is RunState.TRAINING or (run.state is RunState.GATING and run.gate is None)


async def prepare_data_again(deps: Deps, run: Run) -> Run:
    """TRAINING or GATING on a replica without the run's files: write them here (from the
    data logged until now) and go on from the same state."""
    log.info("run %s: its dataset is not on this replica; preparing it again", run.run_id)
    prepared = await deps.data.prepare(run, deps.clock())
    return await change(
        deps,
        run.run_id,
        (run.state,),
        lambda r, now: r.data_prepared_again(prepared.dataset, prepared.holdout_path, now),
    )


async def train(deps: Deps, run: Run, *, resumed: bool) -> Run:
    """TRAINING: the job's attempts until one registers a candidate or none is left."""
    base = await deps.registry.version(run.model, run.base_version)
    command = run.policy.executor.entrypoint_override or base.training_entrypoint
    if not command:
        raise RunFailed(
            FailureStage.TRAINING,
            f"{run.model} version {run.base_version} has no training entrypoint in its "
            "lineage; register it with one or set executor.entrypoint_override",
        )
    if not deps.training.has_executor(run.executor):
        raise RunFailed(
            FailureStage.TRAINING,
            f"executor EXECUTOR_KIND_{run.executor.name} is not configured here",
        )
    if resumed:
        run = await change(
            deps, run.run_id, (RunState.TRAINING,), lambda r, now: r.resume_training(now)
        )
    while run.state is RunState.TRAINING:
        run = await attempt_training(deps, run, command)
    return run


async def attempt_training(deps: Deps, run: Run, command: str) -> Run:
    """One attempt of the job: the run moves on to GATING with a candidate, or records the
    failed attempt (and begins the next one, or fails when none is left)."""
    run_id, attempt, training = run.run_id, run.attempt, (RunState.TRAINING,)

    async def started(handle: str) -> None:
        await change(deps, run_id, training, lambda r, now: r.job_started(handle, attempt, now))

    outcome = await deps.training.attempt(run, command, attempt, started)
    if outcome.candidate:
        return await change(
            deps,
            run_id,
            training,
            lambda r, now: r.trained(outcome.candidate, attempt, outcome.seconds, now),
        )
    tail, _ = await deps.training.log_tail(run_id)
    return await change(
        deps,
        run_id,
        training,
        lambda r, now: r.attempt_failed(outcome.stage, outcome.error, attempt, tail, now),
    )


async def gate(deps: Deps, run: Run) -> None:
    """GATING: evaluate the candidate once, then act on the verdict under the model's lock,
    so a CancelRun cannot slip between the promotion and the run's record of it."""
    gating = (RunState.GATING,)
    if run.gate is None:
        production = await deps.registry.production(run.model)
        production_version = production.version if production is not None else 0
        report = await deps.evaluator.evaluate(run, production_version, deps.clock())
        log.info("run %s gate: %s", run.run_id, report.summary)
        run = await change(
            deps,
            run.run_id,
            gating,
            lambda r, now: r.record_gate(report, production_version, now),
        )
    async with deps.locks(run.model):
        async with deps.unit_of_work() as uow:
            (await load(uow, run.run_id)).expect(*gating)
        state, _ = run.gate_decision
        if state is RunState.PROMOTED:
            production = await deps.registry.production(run.model)
            if production is None or production.version != run.candidate_version:
                summary = run.gate.summary if run.gate is not None else ""
                await deps.registry.promote(
                    run.model, run.candidate_version, f"retrain run {run.run_id}: {summary}"
                )
        await change(deps, run.run_id, gating, lambda r, now: r.gated(now))


async def fail(deps: Deps, run_id: str, stage: FailureStage, error: str) -> None:
    log.warning("run %s failed: %s", run_id, error)
    tail, _ = await deps.training.log_tail(run_id)
    unfinished = (RunState.QUEUED, *IN_PROGRESS)
    await change(deps, run_id, unfinished, lambda r, now: r.fail(stage, error, tail, now))
