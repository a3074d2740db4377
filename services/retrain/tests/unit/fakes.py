"""In-memory stand-ins for the retrain trigger's ports: a unit of work that records what it
would stage in the outbox, a registry, training data, training jobs, an evaluator, a clock
and a wakeup."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from flywheel_common.errors import FailedPrecondition, NotFound
from flywheel_retrain.domain import (
    Dataset,
    ExecutorKind,
    GateReport,
    Policy,
    Run,
    RunEvent,
    RunState,
    StoredWindow,
)
from flywheel_retrain.handlers.ports import (
    AttemptOutcome,
    DataNotReady,
    Deps,
    JobStarted,
    PreparedData,
    VersionInfo,
)
from flywheel_testing.fakes import FakeClock, InMemoryUnitOfWork


@dataclass
class Store:
    """What the database holds, and every event committed, in commit order."""

    runs: dict[str, Run] = field(default_factory=dict)
    windows: list[StoredWindow] = field(default_factory=list)
    policies: dict[str, Policy] = field(default_factory=dict)
    claimed: set[tuple[str, str]] = field(default_factory=set)
    events: list[RunEvent] = field(default_factory=list)
    """Staged on flywheel.retrain-events."""

    def of_type(self, kind: type[RunEvent]) -> list[RunEvent]:
        return [event for event in self.events if isinstance(event, kind)]

    def only_run(self) -> Run:
        [run] = self.runs.values()
        return run


class FakeRuns:
    def __init__(self, rows: dict[str, Run]) -> None:
        self.rows = rows
        self.saved: dict[str, Run] = {}

    async def get(self, run_id: str, *, for_update: bool = False) -> Run | None:
        return self.saved.get(run_id) or self.rows.get(run_id)

    async def by_trigger(self, model: str, trigger_key: str) -> Run | None:
        found = [r for r in self.rows.values() if (r.model, r.trigger.key) == (model, trigger_key)]
        return found[0] if found else None

    async def last(self, model: str) -> Run | None:
        found = sorted(
            (r for r in self.rows.values() if r.model == model), key=lambda r: r.created_at
        )
        return found[-1] if found else None

    async def promoter_of(self, model: str, version: int) -> Run | None:
        return next(
            (
                r
                for r in self.rows.values()
                if (r.model, r.candidate_version, r.state) == (model, version, RunState.PROMOTED)
            ),
            None,
        )

    async def count_in(self, states: Iterable[RunState], model: str) -> int:
        wanted = set(states)
        return sum(1 for r in self.rows.values() if r.model == model and r.state in wanted)

    async def ids_in(self, states: Iterable[RunState]) -> list[tuple[str, str]]:
        wanted = set(states)
        found = sorted(
            (r for r in self.rows.values() if r.state in wanted), key=lambda r: r.created_at
        )
        return [(r.run_id, r.model) for r in found]

    async def page(
        self, model: str, states: tuple[RunState, ...], offset: int, limit: int
    ) -> list[Run]:
        found = [
            r
            for r in self.rows.values()
            if (not model or r.model == model) and (not states or r.state in states)
        ]
        found.sort(key=lambda r: (-r.created_at.timestamp(), r.run_id))
        return found[offset : offset + limit]

    def save(self, run: Run) -> None:
        self.saved[run.run_id] = run
        self.rows[run.run_id] = replace(run, events=())


class FakeWindows:
    def __init__(self, rows: list[StoredWindow]) -> None:
        self.rows = rows

    async def add(self, window: StoredWindow) -> None:
        key = (window.model, window.version, window.window_id)
        if all((w.model, w.version, w.window_id) != key for w in self.rows):
            self.rows.append(window)

    async def of_version(
        self, model: str, version: int, since: datetime | None
    ) -> list[StoredWindow]:
        found = [
            w
            for w in self.rows
            if (w.model, w.version) == (model, version) and (since is None or w.window_end > since)
        ]
        return sorted(found, key=lambda w: w.window_end)

    async def labeled_since(self, model: str, since: datetime | None) -> int:
        return sum(
            w.labeled
            for w in self.rows
            if w.model == model and (since is None or w.window_end > since)
        )


class FakePolicies:
    def __init__(self, rows: dict[str, Policy]) -> None:
        self.rows = rows

    async def get(self, model: str) -> Policy | None:
        return self.rows.get(model)

    async def every(self) -> list[Policy]:
        return list(self.rows.values())

    async def put(
        self, policy: Policy, expected_revision: int | None, actor: str, at: datetime
    ) -> Policy:
        stored = self.rows.get(policy.model)
        current = stored.revision if stored is not None else 0
        if expected_revision is not None and expected_revision != current:
            raise FailedPrecondition(
                f"the retrain policy of {policy.model!r} is at revision {current}"
            )
        self.rows[policy.model] = replace(
            policy, revision=current + 1, updated_by=actor, updated_at=at
        )
        return self.rows[policy.model]


class FakeUnitOfWork(InMemoryUnitOfWork[Store]):
    """The store as repositories; a commit records the events of every run saved."""

    def _open(self, store: Store) -> None:
        self.runs = FakeRuns(dict(store.runs))
        self.windows = FakeWindows(list(store.windows))
        self.policies = FakePolicies(dict(store.policies))

    def _commit(self, store: Store) -> None:
        store.runs, store.windows = self.runs.rows, self.windows.rows
        store.policies = self.policies.rows
        for run in self.runs.saved.values():
            store.events.extend(run.events)


@dataclass
class FakeRegistry:
    versions: dict[tuple[str, int], VersionInfo] = field(default_factory=dict)
    production_of: dict[str, int] = field(default_factory=dict)
    promotions: list[tuple[str, int, str]] = field(default_factory=list)
    refusal: str = ""
    """When set, the registry refuses promotions with this reason (a token without the grant)."""

    def register(self, model: str, version: int, entrypoint: str = "python train.py") -> None:
        self.versions[(model, version)] = VersionInfo(version, entrypoint)

    async def production(self, model: str) -> VersionInfo | None:
        version = self.production_of.get(model)
        return None if version is None else self.versions[(model, version)]

    async def version(self, model: str, version: int) -> VersionInfo:
        found = self.versions.get((model, version))
        if found is None:
            raise NotFound(f"{model!r} has no version {version}")
        return found

    async def promote(self, model: str, version: int, reason: str) -> None:
        if self.refusal:
            raise FailedPrecondition(f"the registry refused to move 'production': {self.refusal}")
        self.production_of[model] = version
        self.promotions.append((model, version, reason))


@dataclass
class FakeData:
    """Prepares a run's files on this replica from `rows` logged rows beside the holdout;
    `lost` are runs whose files are not here."""

    prepared: list[str] = field(default_factory=list)
    lost: set[str] = field(default_factory=set)
    rows: int = 400
    waits: list[int] = field(default_factory=list)
    """The rows each look that found too few waited for."""

    async def prepare(self, run: Run, until: datetime, min_rows: int = 0) -> PreparedData:
        if self.rows < min_rows:
            self.waits.append(min_rows)
            raise DataNotReady(f"{self.rows} rows", timedelta(seconds=2))
        self.prepared.append(run.run_id)
        self.lost.discard(run.run_id)
        dataset = Dataset(
            f"file:///runs/{run.run_id}/data.csv",
            "d" * 64,
            self.rows + 100,
            self.rows,
            window_start=run.data_since(until),
            window_end=until,
        )
        return PreparedData(dataset, f"/runs/{run.run_id}/holdout.csv")

    def present(self, run: Run) -> bool:
        return run.dataset is not None and run.run_id not in self.lost


@dataclass
class FakeTraining:
    """Each attempt fails with the next of `failures` (an error text) until they run out,
    then registers the next version of the model."""

    registry: FakeRegistry
    failures: list[str] = field(default_factory=list)
    attempts: list[int] = field(default_factory=list)
    executors: frozenset[ExecutorKind] = frozenset({ExecutorKind.LOCAL})

    def has_executor(self, kind: ExecutorKind) -> bool:
        return kind in self.executors

    async def attempt(
        self, run: Run, command: str, attempt: int, started: JobStarted
    ) -> AttemptOutcome:
        self.attempts.append(attempt)
        await started(f"pid-{attempt}")
        if self.failures:
            return AttemptOutcome(error=self.failures.pop(0))
        version = 1 + max(v for (m, v) in self.registry.versions if m == run.model)
        self.registry.register(run.model, version)
        return AttemptOutcome(candidate=version, seconds=12.5)

    async def log_tail(self, run_id: str, lines: int = 0) -> tuple[tuple[str, ...], bool]:
        return ("epoch 1", "boom"), False


@dataclass
class FakeEvaluator:
    candidate: float = 0.95
    production: float = 0.90

    async def evaluate(self, run: Run, production_version: int, now: datetime) -> GateReport:
        passed = self.candidate >= self.production
        return GateReport(
            passed,
            "accuracy",
            True,
            self.candidate,
            self.production,
            self.candidate - self.production,
            0.0,
            100,
            "h" * 64,
            f"accuracy: candidate {self.candidate} vs production {self.production}",
            now,
        )


@dataclass
class Pokes:
    count: int = 0
    stopped: list[str] = field(default_factory=list)

    def __call__(self) -> None:
        self.count += 1

    def stop(self, run_id: str) -> None:
        self.stopped.append(run_id)


@dataclass
class World:
    store: Store
    registry: FakeRegistry
    data: FakeData
    training: FakeTraining
    evaluator: FakeEvaluator
    clock: FakeClock
    pokes: Pokes
    deps: Deps


def world(model: str = "iris") -> World:
    """`model` version 1 in production, with a training entrypoint; the default policy."""
    store, registry = Store(), FakeRegistry()
    registry.register(model, 1)
    registry.production_of[model] = 1
    data, training, evaluator = FakeData(), FakeTraining(registry), FakeEvaluator()
    clock, pokes = FakeClock(), Pokes()
    deps = Deps(
        unit_of_work=lambda: FakeUnitOfWork(store),
        registry=registry,
        data=data,
        training=training,
        evaluator=evaluator,
        default_executor=ExecutorKind.LOCAL,
        wakeup=pokes,
        stop_run=pokes.stop,
        clock=clock,
    )
    return World(store, registry, data, training, evaluator, clock, pokes, deps)
