"""One run from queue to decision: data, training, gate, promotion.

Each stage starts by reading what the run already has, so a run interrupted by a restart
resumes where it stopped: a materialised dataset is not built again, and a training job
registers under the run's idempotency key, so repeating it never adds a second version.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from google.protobuf.message import Message

from flywheel.retrain.v1 import events_pb2 as events
from flywheel.retrain.v1 import types_pb2 as pb
from flywheel_common.artifact_cache import ArtifactFetcher
from flywheel_common.errors import FlywheelError, Unavailable
from flywheel_common.registry_client import RegistryClient
from flywheel_common.timestamps import duration, timestamp
from flywheel_common.training import TrainingResult, TrainingRun
from flywheel_retrain import datasets, domain
from flywheel_retrain.converters import from_json, gate, holdout_size, to_json
from flywheel_retrain.domain import RunState
from flywheel_retrain.evaluation import metric_named
from flywheel_retrain.executors import Executor, JobOutcome, JobSpec
from flywheel_retrain.handlers import (
    PRODUCTION,
    SYSTEM_ACTOR,
    Retrainer,
    StaleRun,
    candidate_gated,
)
from flywheel_retrain.logs import LogReader
from flywheel_retrain.scoring import predict_off_loop
from flywheel_retrain.storage import RunRow

log = logging.getLogger(__name__)

LOG_FILE = "training.log"


class RunFailed(Exception):
    def __init__(self, stage: events.FailureStage.ValueType, message: str) -> None:
        super().__init__(message)
        self.stage = stage


@dataclass(frozen=True)
class PipelineSettings:
    runs_dir: Path
    registry_address: str
    registry_token: str
    training_timeout_seconds: float
    log_tail_lines: int


def log_path(runs_dir: Path, run_id: str) -> Path:
    return runs_dir / run_id / LOG_FILE


def path_of(uri: str) -> Path:
    """The local path of a file:// URI (percent-escapes decoded)."""
    return Path(url2pathname(urlparse(uri).path))


TAIL_BYTES_PER_LINE = 512


def _tail(path: Path, lines: int) -> tuple[list[str], bool]:
    if not path.exists():
        return [], False
    with path.open("rb") as log_file:
        size = log_file.seek(0, 2)
        start = max(0, size - lines * TAIL_BYTES_PER_LINE)
        log_file.seek(start)
        text = log_file.read().decode(errors="replace")
    every = text.splitlines()
    if start > 0:
        every = every[1:]  # the first line was cut by the seek
    return every[-lines:], start > 0 or len(every) > lines


async def read_tail(path: Path, lines: int) -> tuple[list[str], bool]:
    """The last `lines` lines of a log and whether there were more, read off the loop."""
    return await asyncio.to_thread(_tail, path, lines)


class RunPipeline:
    def __init__(
        self,
        retrainer: Retrainer,
        registry: RegistryClient,
        logs: LogReader,
        artifacts: ArtifactFetcher,
        executors: dict[int, Executor],
        settings: PipelineSettings,
    ) -> None:
        self._retrainer = retrainer
        self._registry = registry
        self._logs = logs
        self._artifacts = artifacts
        self._executors = executors
        self._settings = settings

    async def execute(self, run_id: str) -> None:
        """Take the run as far as it goes. Unavailable (the registry or the broker is down)
        propagates, so the engine resumes the run later; any other error ends it, naming
        the stage it happened in."""
        row = await self._retrainer.run(run_id)
        stage = events.FAILURE_STAGE_DATA
        try:
            resumed = row.state == RunState.TRAINING
            if row.state in (RunState.QUEUED, RunState.PREPARING_DATA):
                row = await self._prepare_data(row)
            stage = events.FAILURE_STAGE_TRAINING
            if row.state == RunState.TRAINING:
                row = await self._train(row, resumed)
            stage = events.FAILURE_STAGE_GATING
            if row.state == RunState.GATING:
                await self._gate(row)
        except RunFailed as failure:
            await self._fail(run_id, failure.stage, str(failure))
        except (Unavailable, StaleRun):
            raise
        except (FlywheelError, ValueError) as error:
            await self._fail(run_id, stage, str(error))

    # Data

    async def _prepare_data(self, row: RunRow) -> RunRow:
        row = await self._retrainer.change(
            row.run_id,
            [RunState.QUEUED, RunState.PREPARING_DATA],
            lambda r: _set_state(r, RunState.PREPARING_DATA),
        )
        policy = from_json(row.policy, pb.RetrainPolicy())
        folder = self._settings.runs_dir / row.run_id
        until = self._retrainer.now()
        since = until - (policy.training_data.window.ToTimedelta() or timedelta(days=7))
        try:
            predictions = await self._logs.predictions(row.model, since)
            labels = await self._logs.labels(row.model, since, {p.request_id for p in predictions})
        except Exception as error:  # the broker is down or the topics are missing
            raise RunFailed(
                events.FAILURE_STAGE_DATA, f"cannot read logged predictions: {error}"
            ) from error
        feature_names, production_table, production_sha = await self._production_data(row)
        joined, dropped = datasets.join_labels(
            predictions, labels, feature_names, policy.training_data.max_rows
        )
        training, holdout = datasets.hold_out(joined, holdout_size(policy))
        if not len(holdout):
            raise RunFailed(
                events.FAILURE_STAGE_DATA,
                f"no labeled predictions of {row.model} in the last {until - since}: the gate "
                "needs a holdout; send ground truth to flywheel.ground-truth",
            )
        logged_rows = len(training)
        if production_table is not None:
            training = datasets.concatenate(production_table, training)
        if not len(training):
            raise RunFailed(
                events.FAILURE_STAGE_DATA,
                f"all {len(holdout)} labeled predictions are needed for the holdout and the "
                "production version has no training data to add; lower gate.holdout_size",
            )
        dataset_path, dataset_sha = await asyncio.to_thread(
            datasets.write_dataset, folder / "dataset", training
        )
        holdout_path, holdout_sha = await asyncio.to_thread(
            datasets.write_dataset, folder / "holdout", holdout
        )
        if dropped:
            log.warning("run %s: %d logged rows had the wrong feature count", row.run_id, dropped)
        info = pb.DatasetInfo(
            uri=dataset_path.resolve().as_uri(),
            sha256=dataset_sha,
            row_count=len(training),
            logged_row_count=logged_rows,
            window_start=timestamp(since),
            window_end=timestamp(until),
            production_dataset_sha256=production_sha,
        )

        def prepared(r: RunRow) -> list[Message]:
            r.dataset = to_json(info)
            r.holdout_path = str(holdout_path)
            r.state = RunState.TRAINING
            return _begin_attempt(r, 1)

        log.info(
            "run %s: dataset %s (%d rows, %d logged), holdout %s (%d rows)",
            row.run_id,
            dataset_sha[:12],
            len(training),
            logged_rows,
            holdout_sha[:12],
            len(holdout),
        )
        return await self._retrainer.change(row.run_id, [RunState.PREPARING_DATA], prepared)

    async def _production_data(
        self, row: RunRow
    ) -> tuple[list[str] | None, datasets.Table | None, str]:
        """The base version's feature names and, when the policy includes it and its lineage
        names a readable file with the recorded sha256, its training data."""
        policy = from_json(row.policy, pb.RetrainPolicy())
        base = await self._registry.model_version(row.model, row.base_version)
        names = list(base.reference_sample.spec.feature_names) or None
        lineage = base.lineage
        if not policy.training_data.include_production_dataset or not lineage.dataset_uri:
            return names, None, ""
        if not lineage.dataset_uri.startswith("file://"):
            log.warning(
                "run %s: cannot read %s; only file:// datasets are read",
                row.run_id,
                lineage.dataset_uri,
            )
            return names, None, ""
        path = path_of(lineage.dataset_uri)
        data = await asyncio.to_thread(_read_if_present, path)
        if data is None:
            log.warning("run %s: the production dataset %s is gone", row.run_id, path)
            return names, None, ""
        digest = hashlib.sha256(data).hexdigest()
        if lineage.dataset_sha256 and digest != lineage.dataset_sha256:
            raise RunFailed(
                events.FAILURE_STAGE_DATA,
                f"the production dataset {path} has sha256 {digest}, its lineage says "
                f"{lineage.dataset_sha256}",
            )
        try:
            table = await asyncio.to_thread(datasets.from_csv, data)
        except ValueError as error:
            raise RunFailed(events.FAILURE_STAGE_DATA, f"{path}: {error}") from error
        return names or table.feature_names, table, digest

    # Training

    async def _train(self, row: RunRow, resumed: bool) -> RunRow:
        """Run the training job's attempts. Each attempt begins in the same commit as the
        state change that calls for it (entering TRAINING, a failed attempt that will be
        retried, or this resumption of an interrupted one), so a crash at any point counts
        every attempt that may have started."""
        policy = from_json(row.policy, pb.RetrainPolicy())
        base = await self._registry.model_version(row.model, row.base_version)
        command = policy.executor.entrypoint_override or base.lineage.training_entrypoint
        if not command:
            raise RunFailed(
                events.FAILURE_STAGE_TRAINING,
                f"{row.model} version {row.base_version} has no training entrypoint in its "
                "lineage; register it with one or set executor.entrypoint_override",
            )
        executor = self._executors.get(row.executor)
        if executor is None:
            raise RunFailed(
                events.FAILURE_STAGE_TRAINING,
                f"executor {pb.ExecutorKind.Name(pb.ExecutorKind.ValueType(row.executor))} "
                "is not configured here",
            )
        dataset = from_json(row.dataset, pb.DatasetInfo())
        trigger = from_json(row.trigger, pb.Trigger())
        folder = self._settings.runs_dir / row.run_id
        timeout = (
            policy.executor.timeout.ToTimedelta().total_seconds()
            or self._settings.training_timeout_seconds
        )
        attempts = policy.executor.max_retries + 1
        if resumed:
            row = await self._retrainer.change(
                row.run_id,
                [RunState.TRAINING],
                partial(_begin_attempt, attempt=row.attempt + 1),
            )
        while True:
            attempt = row.attempt
            output = folder / f"attempt-{attempt}"
            job = JobSpec(
                run=TrainingRun(
                    model=row.model,
                    run_id=row.run_id,
                    dataset_path=str(path_of(dataset.uri)),
                    dataset_uri=dataset.uri,
                    dataset_sha256=dataset.sha256,
                    output_dir=str(output),
                    registry_address=self._settings.registry_address,
                    registry_token=self._settings.registry_token,
                    parent_version=row.base_version,
                    triggered_by=trigger.triggered_by,
                    training_entrypoint=command,
                ),
                attempt=attempt,
                command=command,
                timeout_seconds=timeout,
                log_path=log_path(self._settings.runs_dir, row.run_id),
                env=dict(policy.executor.env),
                image=policy.executor.image,
            )

            async def started(
                handle: str, run_id: str = row.run_id, attempt: int = attempt
            ) -> None:
                await self._retrainer.change(
                    run_id,
                    [RunState.TRAINING],
                    partial(
                        _started,
                        handle=handle,
                        attempt=attempt,
                        dataset=dataset,
                        retrainer=self._retrainer,
                    ),
                )

            began = time.monotonic()
            outcome = await executor.run(job, started)
            candidate, stage, error = await self._candidate(row, outcome, output)
            if candidate:
                elapsed = time.monotonic() - began
                return await self._retrainer.change(
                    row.run_id,
                    [RunState.TRAINING],
                    partial(
                        _succeeded,
                        candidate=candidate,
                        attempt=attempt,
                        dataset=dataset,
                        elapsed=elapsed,
                        retrainer=self._retrainer,
                    ),
                )
            retry = attempt < attempts
            lines, _ = await read_tail(job.log_path, self._settings.log_tail_lines)
            row = await self._retrainer.change(
                row.run_id,
                [RunState.TRAINING],
                partial(
                    _attempt_failed,
                    stage=stage,
                    error=error,
                    attempt=attempt,
                    will_retry=retry,
                    lines=lines,
                    retrainer=self._retrainer,
                ),
            )
            if not retry:
                return row

    async def _candidate(
        self, row: RunRow, outcome: JobOutcome, output: Path
    ) -> tuple[int, events.FailureStage.ValueType, str]:
        """(candidate version, failure stage, error): the version when the job succeeded and
        registered one carrying this run in its lineage."""
        if not outcome.succeeded:
            stage = (
                events.FAILURE_STAGE_TIMEOUT if outcome.timed_out else events.FAILURE_STAGE_TRAINING
            )
            return 0, stage, outcome.error
        try:
            result = TrainingResult.read(output)
        except ValueError as error:
            return 0, events.FAILURE_STAGE_REGISTRATION, str(error)
        if result.model != row.model:
            return (
                0,
                events.FAILURE_STAGE_REGISTRATION,
                (f"the job registered model {result.model!r}, not {row.model!r}"),
            )
        try:
            version = await self._registry.model_version(row.model, result.version)
        except FlywheelError as error:
            return 0, events.FAILURE_STAGE_REGISTRATION, str(error)
        if version.lineage.retrain_run_id != row.run_id:
            return (
                0,
                events.FAILURE_STAGE_REGISTRATION,
                (
                    f"version {result.version} does not name run {row.run_id} in its lineage "
                    "(lineage.retrain_run_id); register with the TrainingRun's lineage"
                ),
            )
        return result.version, events.FAILURE_STAGE_UNSPECIFIED, ""

    # Gate

    async def _gate(self, row: RunRow) -> None:
        if not row.gate:
            # Evaluated once: a run resumed after a crash acts on the recorded decision
            # instead of comparing a candidate that may already be production with itself.
            result, production_version = await self._evaluate(row)
            row = await self._retrainer.change(
                row.run_id,
                [RunState.GATING],
                partial(_record_gate, result=result, production_version=production_version),
            )
        result = from_json(row.gate, pb.GateResult())
        passed = result.decision == pb.GATE_DECISION_PASSED
        policy = from_json(row.policy, pb.RetrainPolicy())
        sign_off = policy.approval_mode == pb.APPROVAL_MODE_HUMAN_SIGN_OFF
        if not passed:
            state, outcome = RunState.REJECTED, events.CANDIDATE_OUTCOME_REJECTED_BY_GATE
        elif sign_off:
            state, outcome = (
                RunState.AWAITING_APPROVAL,
                events.CANDIDATE_OUTCOME_AWAITING_APPROVAL,
            )
        else:
            state, outcome = RunState.PROMOTED, events.CANDIDATE_OUTCOME_PROMOTED
        # Under the model's lock, so a CancelRun cannot slip between the promotion and the
        # run's record of it.
        async with self._retrainer.model_lock(row.model):
            current = await self._retrainer.run(row.run_id)
            if current.state != RunState.GATING:
                raise StaleRun(f"run {row.run_id} is no longer gating")
            if state == RunState.PROMOTED:
                production = await self._registry.alias_version(row.model, PRODUCTION)
                if production is None or production.version != row.candidate_version:
                    await self._registry.set_alias(
                        row.model,
                        PRODUCTION,
                        row.candidate_version,
                        f"retrain run {row.run_id}: {result.summary}",
                    )
            await self._retrainer.change(
                row.run_id,
                [RunState.GATING],
                partial(_gated, state=state, outcome=outcome, retrainer=self._retrainer),
            )

    async def _evaluate(self, row: RunRow) -> tuple[pb.GateResult, int]:
        """The candidate and the current production version scored on the holdout."""
        rule = gate(from_json(row.policy, pb.RetrainPolicy()))
        production = await self._registry.alias_version(row.model, PRODUCTION)
        production_version = production.version if production is not None else 0
        try:
            holdout = datasets.from_csv(await asyncio.to_thread(Path(row.holdout_path).read_bytes))
            _, candidate_file = await self._artifacts.fetch(row.model, row.candidate_version)
            metric = metric_named(rule.metric)
            candidate_value = metric.score(
                holdout.labels, await predict_off_loop(candidate_file, holdout.features)
            )
            production_value: float | None = None
            if production_version:
                _, production_file = await self._artifacts.fetch(row.model, production_version)
                production_value = metric.score(
                    holdout.labels, await predict_off_loop(production_file, holdout.features)
                )
        except (OSError, ValueError, FlywheelError) as error:
            raise RunFailed(events.FAILURE_STAGE_GATING, f"cannot evaluate: {error}") from error
        verdict = domain.evaluate_gate(rule, candidate_value, production_value)
        log.info("run %s gate: %s", row.run_id, verdict.reason)
        result = pb.GateResult(
            decision=pb.GATE_DECISION_PASSED if verdict.passed else pb.GATE_DECISION_FAILED,
            metric=rule.metric,
            goal=pb.METRIC_GOAL_MAXIMIZE if rule.higher_is_better else pb.METRIC_GOAL_MINIMIZE,
            candidate_value=verdict.candidate,
            production_value=verdict.production,
            improvement=verdict.improvement,
            min_improvement=rule.min_improvement,
            holdout_size=len(holdout),
            holdout_sha256=hashlib.sha256(datasets.to_csv(holdout)).hexdigest(),
            summary=verdict.reason,
            evaluated_at=timestamp(self._retrainer.now()),
        )
        return result, production_version

    async def _fail(self, run_id: str, stage: events.FailureStage.ValueType, error: str) -> None:
        log.warning("run %s failed: %s", run_id, error)
        lines, _ = await read_tail(
            log_path(self._settings.runs_dir, run_id), self._settings.log_tail_lines
        )
        await self._retrainer.change(
            run_id,
            [
                RunState.QUEUED,
                RunState.PREPARING_DATA,
                RunState.TRAINING,
                RunState.GATING,
            ],
            lambda r: _attempt_failed(
                r, stage, error, max(r.attempt, 1), False, lines, self._retrainer
            ),
        )


def _read_if_present(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def _record_gate(row: RunRow, result: pb.GateResult, production_version: int) -> list[Message]:
    row.gate = to_json(result)
    row.gated_against = production_version
    return []


def _gated(
    row: RunRow,
    state: RunState,
    outcome: events.CandidateOutcome.ValueType,
    retrainer: Retrainer,
) -> list[Message]:
    row.state = state
    if state == RunState.REJECTED:
        row.error = f"rejected by the gate: {from_json(row.gate, pb.GateResult()).summary}"
    return [candidate_gated(row, outcome, SYSTEM_ACTOR, retrainer.now())]


def _set_state(row: RunRow, state: RunState) -> list[Message]:
    row.state = state
    return []


def _begin_attempt(row: RunRow, attempt: int) -> list[Message]:
    row.attempt = attempt
    row.executor_job_id = ""
    return []


def _started(
    row: RunRow, handle: str, attempt: int, dataset: pb.DatasetInfo, retrainer: Retrainer
) -> list[Message]:
    now = retrainer.now()
    row.executor_job_id = handle
    row.started_at = row.started_at or now
    return [
        events.RetrainStarted(
            run_id=row.run_id,
            model=row.model,
            dataset=dataset,
            executor=pb.ExecutorKind.ValueType(row.executor),
            executor_job_id=handle,
            attempt=attempt,
            occurred_at=timestamp(now),
        )
    ]


def _succeeded(
    row: RunRow,
    candidate: int,
    attempt: int,
    dataset: pb.DatasetInfo,
    elapsed: float,
    retrainer: Retrainer,
) -> list[Message]:
    row.candidate_version = candidate
    row.state = RunState.GATING
    return [
        events.RetrainSucceeded(
            run_id=row.run_id,
            model=row.model,
            candidate_version=candidate,
            dataset=dataset,
            attempt=attempt,
            training_duration=duration(elapsed),
            occurred_at=timestamp(retrainer.now()),
        )
    ]


def _attempt_failed(
    row: RunRow,
    stage: events.FailureStage.ValueType,
    error: str,
    attempt: int,
    will_retry: bool,
    lines: list[str],
    retrainer: Retrainer,
) -> list[Message]:
    if will_retry:
        _begin_attempt(row, attempt + 1)
    else:
        row.state = RunState.FAILED
        row.error = error
    return [
        events.RetrainFailed(
            run_id=row.run_id,
            model=row.model,
            stage=stage,
            error=error,
            attempt=attempt,
            will_retry=will_retry,
            log_tail=lines,
            occurred_at=timestamp(retrainer.now()),
        )
    ]
