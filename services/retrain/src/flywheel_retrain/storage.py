"""The retrain trigger's tables, their repositories, and the unit of work that commits them
with the events the runs recorded."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.orm.exc import StaleDataError

from flywheel.retrain.v1 import types_pb2 as pb
from flywheel_common.db import (
    ROW_ID,
    TIMESTAMP,
    Base,
    IntEnumColumn,
    insert_unless_present,
)
from flywheel_common.policies import PolicyColumns, PolicyRepository
from flywheel_common.timestamps import stored_utc
from flywheel_common.topics import RETRAIN_EVENTS
from flywheel_common.unit_of_work import SqlUnitOfWork
from flywheel_retrain import converters
from flywheel_retrain.domain import ExecutorKind, Policy, Run, RunState, StoredWindow
from flywheel_retrain.handlers.ports import ConcurrentChange


class PolicyRow(PolicyColumns, Base):
    __tablename__ = "retrain_policies"


POLICIES = PolicyRepository(PolicyRow, pb.RetrainPolicy, "retrain policy")


class RunRow(Base):
    __tablename__ = "retrain_runs"
    __table_args__ = (
        # One run per trigger: a redelivered alert or a restart finds the run it started.
        UniqueConstraint("model", "trigger_key"),
    )

    run_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    row_version: Mapped[int] = mapped_column(Integer)
    """Optimistic lock: a change computed from a stale read fails instead of overwriting
    (SQLite ignores SELECT ... FOR UPDATE)."""
    model: Mapped[str] = mapped_column(String(128), index=True)
    state: Mapped[RunState] = mapped_column(IntEnumColumn(RunState), index=True)
    trigger_key: Mapped[str] = mapped_column(String(512))
    trigger: Mapped[dict[str, Any]] = mapped_column(JSON)
    base_version: Mapped[int] = mapped_column(BigInteger)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The policy in effect when the run was created (JSON form of RetrainPolicy)."""
    executor: Mapped[ExecutorKind] = mapped_column(IntEnumColumn(ExecutorKind))
    executor_job_id: Mapped[str] = mapped_column(String(256), default="")
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    dataset: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    holdout_path: Mapped[str] = mapped_column(Text, default="")
    candidate_version: Mapped[int] = mapped_column(BigInteger, default=0)
    gate: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    gated_against: Mapped[int] = mapped_column(BigInteger, default=0)
    """The production version the gate compared the candidate with."""
    approval: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP, index=True)
    started_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)
    finished_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)

    __mapper_args__ = {"version_id_col": row_version}


class WindowRow(Base):
    __tablename__ = "retrain_metric_windows"
    __table_args__ = (UniqueConstraint("model", "version", "window_id"),)

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(BigInteger)
    window_id: Mapped[str] = mapped_column(String(256))
    window_end: Mapped[datetime] = mapped_column(TIMESTAMP, index=True)
    labeled: Mapped[int] = mapped_column(BigInteger)
    accuracy: Mapped[float | None] = mapped_column(Float)
    mean_absolute_error: Mapped[float | None] = mapped_column(Float)
    error_rate: Mapped[float | None] = mapped_column(Float)
    estimated_accuracy: Mapped[float | None] = mapped_column(Float)
    estimated_count: Mapped[int] = mapped_column(BigInteger, server_default="0")


def run_of(row: RunRow) -> Run:
    return Run(
        run_id=row.run_id,
        model=row.model,
        state=row.state,
        trigger=converters.trigger_from_document(row.trigger),
        base_version=row.base_version,
        policy=converters.policy_from_document(row.policy),
        executor=row.executor,
        created_at=stored_utc(row.created_at),
        updated_at=stored_utc(row.updated_at),
        executor_job_id=row.executor_job_id,
        attempt=row.attempt,
        dataset=converters.dataset_from_document(row.dataset),
        holdout_path=row.holdout_path,
        candidate_version=row.candidate_version,
        gate=converters.gate_from_document(row.gate),
        gated_against=row.gated_against,
        approval=converters.approval_from_document(row.approval),
        error=row.error,
        started_at=stored_utc(row.started_at) if row.started_at else None,
        finished_at=stored_utc(row.finished_at) if row.finished_at else None,
    )


def write_run(row: RunRow, run: Run) -> None:
    """The run's changeable fields onto its row; what a run is created with stays."""
    row.state = run.state
    row.executor_job_id = run.executor_job_id
    row.attempt = run.attempt
    row.dataset = converters.dataset_document(run.dataset)
    row.holdout_path = run.holdout_path
    row.candidate_version = run.candidate_version
    row.gate = converters.gate_document(run.gate)
    row.gated_against = run.gated_against
    row.approval = converters.approval_document(run.approval)
    row.error = run.error
    row.started_at = run.started_at
    row.finished_at = run.finished_at
    row.updated_at = run.updated_at


class SqlRuns:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self.saved: dict[str, Run] = {}
        """Runs saved in this unit of work, in the order first saved."""

    async def get(self, run_id: str, *, for_update: bool = False) -> Run | None:
        if run_id in self.saved:
            return self.saved[run_id]
        row = await self._session.get(RunRow, run_id, with_for_update=for_update)
        return None if row is None else run_of(row)

    async def by_trigger(self, model: str, trigger_key: str) -> Run | None:
        query = select(RunRow).where(RunRow.model == model, RunRow.trigger_key == trigger_key)
        row = (await self._session.execute(query)).scalar_one_or_none()
        return None if row is None else run_of(row)

    async def last(self, model: str) -> Run | None:
        query = select(RunRow).where(RunRow.model == model).order_by(RunRow.created_at.desc())
        row = (await self._session.execute(query.limit(1))).scalar_one_or_none()
        return None if row is None else run_of(row)

    async def promoter_of(self, model: str, version: int) -> Run | None:
        query = select(RunRow).where(
            RunRow.model == model,
            RunRow.candidate_version == version,
            RunRow.state == RunState.PROMOTED,
        )
        row = (await self._session.execute(query.limit(1))).scalar_one_or_none()
        return None if row is None else run_of(row)

    async def count_in(self, states: Iterable[RunState], model: str) -> int:
        query = select(func.count()).where(RunRow.state.in_(list(states)), RunRow.model == model)
        return int((await self._session.execute(query)).scalar_one())

    async def ids_in(self, states: Iterable[RunState]) -> list[tuple[str, str]]:
        query = select(RunRow.run_id, RunRow.model).where(RunRow.state.in_(list(states)))
        rows = await self._session.execute(query.order_by(RunRow.created_at))
        return [(run_id, model) for run_id, model in rows]

    async def page(
        self, model: str, states: tuple[RunState, ...], offset: int, limit: int
    ) -> list[Run]:
        query = select(RunRow)
        if model:
            query = query.where(RunRow.model == model)
        if states:
            query = query.where(RunRow.state.in_(list(states)))
        query = query.order_by(RunRow.created_at.desc(), RunRow.run_id)
        rows = (await self._session.execute(query.offset(offset).limit(limit))).scalars()
        return [run_of(row) for row in rows]

    def save(self, run: Run) -> None:
        self.saved[run.run_id] = run

    async def write(self) -> None:
        for run in self.saved.values():
            # The row read by `get` (the identity map keeps it): its row_version makes a
            # concurrent change fail this flush instead of being overwritten.
            row = await self._session.get(RunRow, run.run_id)
            if row is None:
                row = RunRow(
                    run_id=run.run_id,
                    model=run.model,
                    trigger_key=run.trigger.key,
                    trigger=converters.trigger_document(run.trigger),
                    base_version=run.base_version,
                    policy=converters.policy_document(run.policy),
                    executor=run.executor,
                    created_at=run.created_at,
                )
                self._session.add(row)
            write_run(row, run)


class SqlWindows:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, window: StoredWindow) -> None:
        values = {
            "model": window.model,
            "version": window.version,
            "window_id": window.window_id,
            "window_end": window.window_end,
            "labeled": window.labeled,
            "accuracy": window.accuracy,
            "mean_absolute_error": window.mean_absolute_error,
            "error_rate": window.error_rate,
            "estimated_accuracy": window.estimated_accuracy,
            "estimated_count": window.estimated_count,
        }
        await insert_unless_present(
            self._session, WindowRow, values, ["model", "version", "window_id"]
        )

    async def of_version(
        self, model: str, version: int, since: datetime | None, limit: int = 100
    ) -> list[StoredWindow]:
        query = select(WindowRow).where(WindowRow.model == model, WindowRow.version == version)
        if since is not None:
            query = query.where(WindowRow.window_end > since)
        query = query.order_by(WindowRow.window_end.desc()).limit(limit)
        rows = list((await self._session.execute(query)).scalars())
        return [
            StoredWindow(
                model=row.model,
                version=row.version,
                window_id=row.window_id,
                window_end=stored_utc(row.window_end),
                labeled=row.labeled,
                accuracy=row.accuracy,
                mean_absolute_error=row.mean_absolute_error,
                error_rate=row.error_rate,
                estimated_accuracy=row.estimated_accuracy,
                estimated_count=row.estimated_count,
            )
            for row in reversed(rows)
        ]

    async def labeled_since(self, model: str, since: datetime | None) -> int:
        query = select(func.coalesce(func.sum(WindowRow.labeled), 0)).where(
            WindowRow.model == model
        )
        if since is not None:
            query = query.where(WindowRow.window_end > since)
        return int((await self._session.execute(query)).scalar_one())


class SqlPolicies:
    """Retrain policies through the shared versioned policy helper."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, model: str) -> Policy | None:
        stored = await POLICIES.get(self._session, model)
        return None if stored is None else converters.policy_of(stored)

    async def every(self) -> list[Policy]:
        return [converters.policy_of(stored) for stored in await POLICIES.every(self._session)]

    async def put(
        self, policy: Policy, expected_revision: int | None, actor: str, at: datetime
    ) -> Policy:
        message = converters.policy_message(policy)
        stored = await POLICIES.put(self._session, message, expected_revision, actor, at)
        return converters.policy_of(stored)


class RetrainUnitOfWork(SqlUnitOfWork):
    """A transaction of the trigger's database: on a normal exit it writes the runs saved,
    stages their events on flywheel.retrain-events and commits; on an error it rolls back.
    A run another transaction changed first fails the commit with ConcurrentChange."""

    def _open(self, session: AsyncSession) -> None:
        self.runs = SqlRuns(session)
        self.windows = SqlWindows(session)
        self.policies = SqlPolicies(session)

    def _failure(self, error: BaseException) -> BaseException:
        if isinstance(error, StaleDataError):
            return ConcurrentChange(f"a run changed concurrently: {error}")
        return error

    async def _write(self) -> None:
        await self.runs.write()
        for run in self.runs.saved.values():
            for event in run.events:
                self._stage(RETRAIN_EVENTS, converters.event_message(event), run.model)
        await self.session.flush()
