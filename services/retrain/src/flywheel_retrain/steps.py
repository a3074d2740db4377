"""The run's steps as adapters of the use cases' ports: the registry, training data from
the logs, training attempts through an executor, and the gate's evaluation on the holdout.

What the steps write lives under the runs folder, one subfolder per run: the dataset and
holdout (CSV named by sha256), each attempt's output, and the training log.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from urllib.parse import urlparse
from urllib.request import url2pathname

from opentelemetry import trace

from flywheel.registry.v1 import types_pb2 as registry_types
from flywheel_common.artifact_cache import ArtifactFetcher
from flywheel_common.errors import FlywheelError
from flywheel_common.registry_client import RegistryClient
from flywheel_common.settings import ClientTlsSettings
from flywheel_common.telemetry import traceparent
from flywheel_common.training import TrainingResult, TrainingRun
from flywheel_retrain import datasets
from flywheel_retrain.domain import (
    Dataset,
    ExecutorKind,
    FailureStage,
    GateReport,
    Run,
    evaluate_gate,
    next_data_check,
)
from flywheel_retrain.evaluation import metric_named
from flywheel_retrain.executors import Executor, JobOutcome, JobSpec
from flywheel_retrain.handlers.ports import (
    AttemptOutcome,
    DataNotReady,
    JobStarted,
    PreparedData,
    RunFailed,
    VersionInfo,
)
from flywheel_retrain.logs import LogReader
from flywheel_retrain.scoring import predict_off_loop

log = logging.getLogger(__name__)

PRODUCTION = "production"
LOG_FILE = "training.log"
TAIL_BYTES_PER_LINE = 512


def log_path(runs_dir: Path, run_id: str) -> Path:
    return runs_dir / run_id / LOG_FILE


def path_of(uri: str) -> Path:
    """The local path of a file:// URI (percent-escapes decoded)."""
    return Path(url2pathname(urlparse(uri).path))


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


def _read_if_present(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


class Registry:
    """The registry as the use cases see it."""

    def __init__(self, client: RegistryClient) -> None:
        self._client = client

    async def production(self, model: str) -> VersionInfo | None:
        version = await self._client.alias_version(model, PRODUCTION)
        return None if version is None else _info(version)

    async def version(self, model: str, version: int) -> VersionInfo:
        return _info(await self._client.model_version(model, version))

    async def promote(self, model: str, version: int, reason: str) -> None:
        await self._client.set_alias(model, PRODUCTION, version, reason)


def _info(version: registry_types.ModelVersion) -> VersionInfo:
    lineage = version.lineage
    return VersionInfo(version.version, lineage.training_entrypoint, lineage.retrain_run_id)


class LoggedData:
    """Training data from the model's logged predictions joined with ground truth, the
    newest labeled rows held out for the gate, plus the production version's own training
    data when the policy includes it."""

    def __init__(self, logs: LogReader, registry: RegistryClient, runs_dir: Path) -> None:
        self._logs = logs
        self._registry = registry
        self._runs_dir = runs_dir

    async def prepare(self, run: Run, until: datetime, min_rows: int = 0) -> PreparedData:
        policy = run.policy
        folder = self._runs_dir / run.run_id
        since = run.data_since(until)
        try:
            predictions = await self._logs.predictions(run.model, since)
            labels = await self._logs.labels(run.model, since, {p.request_id for p in predictions})
        except Exception as error:  # the broker is down or the topics are missing
            raise RunFailed(
                FailureStage.DATA, f"cannot read logged predictions: {error}"
            ) from error
        feature_names, production_table, production_sha = await self._production_data(run)
        joined, dropped = datasets.join_labels(
            predictions, labels, feature_names, policy.training_data.max_rows
        )
        training, holdout = datasets.hold_out(joined, policy.holdout_size)
        logged_rows = len(training)
        if logged_rows < min_rows:
            waited = until - run.created_at
            raise DataNotReady(
                f"{logged_rows} labelled rows since {since:%Y-%m-%d %H:%M:%S} beside the "
                f"holdout of {len(holdout)}, waiting for {min_rows} (waited {waited})",
                next_data_check(waited),
            )
        if not len(holdout):
            raise RunFailed(
                FailureStage.DATA,
                f"no labeled predictions of {run.model} in the last {until - since}: the gate "
                "needs a holdout; send ground truth to flywheel.ground-truth",
            )
        if production_table is not None:
            training = datasets.concatenate(production_table, training)
        if not len(training):
            raise RunFailed(
                FailureStage.DATA,
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
            log.warning("run %s: %d logged rows had the wrong feature count", run.run_id, dropped)
        log.info(
            "run %s: dataset %s (%d rows, %d logged), holdout %s (%d rows)",
            run.run_id,
            dataset_sha[:12],
            len(training),
            logged_rows,
            holdout_sha[:12],
            len(holdout),
        )
        dataset = Dataset(
            uri=dataset_path.resolve().as_uri(),
            sha256=dataset_sha,
            row_count=len(training),
            logged_row_count=logged_rows,
            window_start=since,
            window_end=until,
            production_dataset_sha256=production_sha,
        )
        return PreparedData(dataset, str(holdout_path))

    def present(self, run: Run) -> bool:
        dataset = run.dataset
        return (
            dataset is not None
            and path_of(dataset.uri).is_file()
            and Path(run.holdout_path).is_file()
        )

    async def _production_data(
        self, run: Run
    ) -> tuple[list[str] | None, datasets.Table | None, str]:
        """The base version's feature names and, when the policy includes it and its lineage
        names a readable file with the recorded sha256, its training data."""
        base = await self._registry.model_version(run.model, run.base_version)
        names = list(base.reference_sample.spec.feature_names) or None
        lineage = base.lineage
        included = run.policy.training_data.include_production_dataset
        if not included or run.trains_since_change or not lineage.dataset_uri:
            return names, None, ""
        if not lineage.dataset_uri.startswith("file://"):
            log.warning(
                "run %s: cannot read %s; only file:// datasets are read",
                run.run_id,
                lineage.dataset_uri,
            )
            return names, None, ""
        path = path_of(lineage.dataset_uri)
        data = await asyncio.to_thread(_read_if_present, path)
        if data is None:
            log.warning("run %s: the production dataset %s is gone", run.run_id, path)
            return names, None, ""
        digest = hashlib.sha256(data).hexdigest()
        if lineage.dataset_sha256 and digest != lineage.dataset_sha256:
            raise RunFailed(
                FailureStage.DATA,
                f"the production dataset {path} has sha256 {digest}, its lineage says "
                f"{lineage.dataset_sha256}",
            )
        try:
            table = await asyncio.to_thread(datasets.from_csv, data)
        except ValueError as error:
            raise RunFailed(FailureStage.DATA, f"{path}: {error}") from error
        return names or table.feature_names, table, digest


@dataclass(frozen=True)
class TrainingSettings:
    runs_dir: Path
    registry_address: str
    registry_token: str
    registry_tls: ClientTlsSettings
    training_timeout_seconds: float
    log_tail_lines: int


class TrainingJobs:
    """Attempts of a run's training job through the executor its run names; an attempt
    succeeds when the job registered a version naming the run in its lineage."""

    def __init__(
        self,
        executors: dict[ExecutorKind, Executor],
        registry: RegistryClient,
        settings: TrainingSettings,
    ) -> None:
        self._executors = executors
        self._registry = registry
        self._settings = settings

    def has_executor(self, kind: ExecutorKind) -> bool:
        return kind in self._executors

    async def attempt(
        self, run: Run, command: str, attempt: int, started: JobStarted
    ) -> AttemptOutcome:
        policy, dataset = run.policy, run.dataset
        dataset_uri = dataset.uri if dataset is not None else ""
        output = self._settings.runs_dir / run.run_id / f"attempt-{attempt}"
        job = JobSpec(
            run=TrainingRun(
                model=run.model,
                run_id=run.run_id,
                dataset_path=str(path_of(dataset_uri)),
                dataset_uri=dataset_uri,
                dataset_sha256=dataset.sha256 if dataset is not None else "",
                output_dir=str(output),
                registry_address=self._settings.registry_address,
                registry_token=self._settings.registry_token,
                **TrainingRun.registry_tls_fields(self._settings.registry_tls),
                parent_version=run.base_version,
                triggered_by=run.trigger.triggered_by,
                training_entrypoint=command,
                traceparent=traceparent(trace.get_current_span().get_span_context()),
            ),
            attempt=attempt,
            command=command,
            timeout_seconds=(
                policy.executor.timeout.total_seconds() or self._settings.training_timeout_seconds
            ),
            log_path=log_path(self._settings.runs_dir, run.run_id),
            env=dict(policy.executor.env),
            image=policy.executor.image,
        )
        began = time.monotonic()
        outcome = await self._executors[run.executor].run(job, started)
        checked = await self._candidate(run, outcome, output)
        return AttemptOutcome(
            checked.candidate, checked.stage, checked.error, time.monotonic() - began
        )

    async def _candidate(self, run: Run, outcome: JobOutcome, output: Path) -> AttemptOutcome:
        """The version when the job succeeded and registered one carrying this run in its
        lineage; otherwise the stage that failed and why."""
        if not outcome.succeeded:
            stage = FailureStage.TIMEOUT if outcome.timed_out else FailureStage.TRAINING
            return AttemptOutcome(0, stage, outcome.error)
        try:
            result = TrainingResult.read(output)
        except ValueError as error:
            return AttemptOutcome(0, FailureStage.REGISTRATION, str(error))
        if result.model != run.model:
            return AttemptOutcome(
                0,
                FailureStage.REGISTRATION,
                f"the job registered model {result.model!r}, not {run.model!r}",
            )
        try:
            version = await self._registry.model_version(run.model, result.version)
        except FlywheelError as error:
            return AttemptOutcome(0, FailureStage.REGISTRATION, str(error))
        if version.lineage.retrain_run_id != run.run_id:
            return AttemptOutcome(
                0,
                FailureStage.REGISTRATION,
                f"version {result.version} does not name run {run.run_id} in its lineage "
                "(lineage.retrain_run_id); register with the TrainingRun's lineage",
            )
        return AttemptOutcome(result.version)

    async def log_tail(self, run_id: str, lines: int = 0) -> tuple[tuple[str, ...], bool]:
        tail, truncated = await read_tail(
            log_path(self._settings.runs_dir, run_id), lines or self._settings.log_tail_lines
        )
        return tuple(tail), truncated


class HoldoutEvaluator:
    """The candidate and production scored on the run's holdout (ONNX on CPU, off the
    event loop), compared by the policy's gate."""

    def __init__(self, artifacts: ArtifactFetcher) -> None:
        self._artifacts = artifacts

    async def evaluate(self, run: Run, production_version: int, now: datetime) -> GateReport:
        rule = run.policy.gate_rule()
        try:
            holdout = datasets.from_csv(await asyncio.to_thread(Path(run.holdout_path).read_bytes))
            _, candidate_file = await self._artifacts.fetch(run.model, run.candidate_version)
            metric = metric_named(rule.metric)
            candidate_value = metric.score(
                holdout.labels, await predict_off_loop(candidate_file, holdout.features)
            )
            production_value: float | None = None
            if production_version:
                _, production_file = await self._artifacts.fetch(run.model, production_version)
                production_value = metric.score(
                    holdout.labels, await predict_off_loop(production_file, holdout.features)
                )
        except (OSError, ValueError, FlywheelError) as error:
            raise RunFailed(FailureStage.GATING, f"cannot evaluate: {error}") from error
        verdict = evaluate_gate(rule, candidate_value, production_value)
        return GateReport(
            passed=verdict.passed,
            metric=rule.metric,
            higher_is_better=rule.higher_is_better,
            candidate_value=verdict.candidate,
            production_value=verdict.production,
            improvement=verdict.improvement,
            min_improvement=rule.min_improvement,
            holdout_size=len(holdout),
            holdout_sha256=hashlib.sha256(datasets.to_csv(holdout)).hexdigest(),
            summary=verdict.reason,
            evaluated_at=now,
        )
