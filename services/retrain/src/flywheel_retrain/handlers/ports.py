"""What the use cases need from outside: a unit of work with its repositories, the registry,
the training steps (data, jobs, gate), a clock, the engine's wakeup and the model locks."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Protocol

from flywheel_common.auth import current_principal
from flywheel_common.errors import Aborted, NotFound
from flywheel_common.unit_of_work import Transaction
from flywheel_retrain.domain import (
    Dataset,
    ExecutorKind,
    FailureStage,
    GateReport,
    Policy,
    Run,
    RunState,
    StoredWindow,
)


class Runs(Protocol):
    async def get(self, run_id: str, *, for_update: bool = False) -> Run | None: ...

    async def by_trigger(self, model: str, trigger_key: str) -> Run | None: ...

    async def last(self, model: str) -> Run | None:
        """The model's newest run, any state."""
        ...

    async def count_in(self, states: Iterable[RunState], model: str) -> int: ...

    async def promoter_of(self, model: str, version: int) -> Run | None:
        """The run that promoted `version` of `model`, if one did."""
        ...

    async def ids_in(self, states: Iterable[RunState]) -> list[tuple[str, str]]:
        """(run id, model) of the runs in `states`, oldest first."""
        ...

    async def page(
        self, model: str, states: tuple[RunState, ...], offset: int, limit: int
    ) -> list[Run]:
        """Newest first; no states means any."""
        ...

    def save(self, run: Run) -> None: ...


class Windows(Protocol):
    async def add(self, window: StoredWindow) -> None:
        """Keep a window once; the same window again changes nothing."""
        ...

    async def of_version(
        self, model: str, version: int, since: datetime | None
    ) -> list[StoredWindow]:
        """The newest windows of a version ending after `since`, oldest first."""
        ...

    async def labeled_since(self, model: str, since: datetime | None) -> int: ...


class Policies(Protocol):
    async def get(self, model: str) -> Policy | None: ...

    async def every(self) -> list[Policy]: ...

    async def put(
        self, policy: Policy, expected_revision: int | None, actor: str, at: datetime
    ) -> Policy:
        """The policy stored as the model's next revision; FAILED_PRECONDITION when
        `expected_revision` is given and is not the stored one."""
        ...


class UnitOfWork(Transaction, Protocol):
    """One transaction: committed when the block ends normally, with the events of every
    run saved staged for publication; rolled back when it raises. A run changed by someone
    else since it was read makes the commit fail with `Aborted`."""

    @property
    def runs(self) -> Runs: ...

    @property
    def windows(self) -> Windows: ...

    @property
    def policies(self) -> Policies: ...


@dataclass(frozen=True)
class VersionInfo:
    """What the trigger needs to know of a registered version."""

    version: int
    training_entrypoint: str = ""
    retrain_run_id: str = ""


class Registry(Protocol):
    async def production(self, model: str) -> VersionInfo | None: ...

    async def version(self, model: str, version: int) -> VersionInfo: ...

    async def promote(self, model: str, version: int, reason: str) -> None:
        """Move the model's `production` alias to `version`."""
        ...


class ConcurrentChange(Aborted):
    """Another transaction changed a run this unit of work read; read it again and retry."""


class RunFailed(Exception):
    """A step of a run cannot go on: the message says why and what to fix."""

    def __init__(self, stage: FailureStage, message: str) -> None:
        super().__init__(message)
        self.stage = stage


class DataNotReady(Exception):
    """The run waits for more labelled rows: its data step runs again `retry_after` from
    now (the run stays PREPARING_DATA, so a restart resumes the wait)."""

    def __init__(self, message: str, retry_after: timedelta) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class PreparedData:
    dataset: Dataset
    holdout_path: str


class TrainingData(Protocol):
    async def prepare(self, run: Run, until: datetime, min_rows: int = 0) -> PreparedData:
        """The run's dataset and holdout, written; RunFailed when they cannot be, and
        DataNotReady (nothing written) while fewer than `min_rows` logged rows are there
        beside the holdout."""
        ...

    def present(self, run: Run) -> bool:
        """Whether this replica can read the run's dataset and holdout (a replica that
        resumes a run prepared by another one, since dead, cannot)."""
        ...


@dataclass(frozen=True)
class AttemptOutcome:
    """How an attempt of a training job ended: a candidate, or the stage that failed."""

    candidate: int = 0
    stage: FailureStage = FailureStage.TRAINING
    error: str = ""
    seconds: float = 0.0


JobStarted = Callable[[str], Awaitable[None]]
"""Called with the executor's handle of the job (process id, Job name) once it runs."""


class Training(Protocol):
    def has_executor(self, kind: ExecutorKind) -> bool: ...

    async def attempt(
        self, run: Run, command: str, attempt: int, started: JobStarted
    ) -> AttemptOutcome:
        """Run one attempt of the run's training job to its end and check what it
        registered."""
        ...

    async def log_tail(self, run_id: str, lines: int = 0) -> tuple[tuple[str, ...], bool]:
        """The last `lines` lines (0: the configured default) of the run's training log,
        and whether there were more."""
        ...


class Evaluator(Protocol):
    async def evaluate(self, run: Run, production_version: int, now: datetime) -> GateReport:
        """The candidate and production (0: none) scored on the run's holdout;
        RunFailed when they cannot be."""
        ...


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class ModelLocks:
    """Serialise this process's decisions about one model: new runs, promotions,
    cancellations and sign-offs (the database's row versions cover other processes)."""

    _locks: defaultdict[str, asyncio.Lock] = field(
        default_factory=lambda: defaultdict(asyncio.Lock)
    )

    def __call__(self, model: str) -> asyncio.Lock:
        return self._locks[model]


@dataclass(frozen=True)
class Deps:
    unit_of_work: Callable[[], UnitOfWork]
    registry: Registry
    data: TrainingData
    training: Training
    evaluator: Evaluator
    default_executor: ExecutorKind
    wakeup: Callable[[], None]
    """Pokes the run engine after a change it should act on."""
    stop_run: Callable[[str], None]
    """Stops the task executing a run in this process, if any."""
    clock: Callable[[], datetime] = utc_now
    locks: ModelLocks = field(default_factory=ModelLocks)


def actor() -> str:
    """Who is calling: the RPC's principal, or `system` outside any RPC."""
    return current_principal().subject


async def load(uow: UnitOfWork, run_id: str) -> Run:
    run = await uow.runs.get(run_id, for_update=True)
    if run is None:
        raise NotFound(f"no retrain run {run_id!r}")
    return run


async def policy_of(uow: UnitOfWork, model: str) -> Policy:
    """The model's stored policy, or the default one."""
    return await uow.policies.get(model) or Policy.default(model)
