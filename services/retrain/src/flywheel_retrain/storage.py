"""The retrain trigger's tables: policies, runs, and the metric windows it has seen."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
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

from flywheel.retrain.v1 import types_pb2 as pb
from flywheel_common.db import Base, IntEnumColumn, insert_unless_present
from flywheel_common.policies import PolicyColumns, PolicyRepository
from flywheel_retrain.domain import RunState

_ID = BigInteger().with_variant(Integer, "sqlite")
_TIME = DateTime(timezone=True)


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
    executor: Mapped[int] = mapped_column(Integer)
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
    created_at: Mapped[datetime] = mapped_column(_TIME, index=True)
    started_at: Mapped[datetime | None] = mapped_column(_TIME)
    finished_at: Mapped[datetime | None] = mapped_column(_TIME)
    updated_at: Mapped[datetime] = mapped_column(_TIME)

    __mapper_args__ = {"version_id_col": row_version}


class WindowRow(Base):
    __tablename__ = "retrain_metric_windows"
    __table_args__ = (UniqueConstraint("model", "version", "window_id"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(BigInteger)
    window_id: Mapped[str] = mapped_column(String(256))
    window_end: Mapped[datetime] = mapped_column(_TIME, index=True)
    labeled: Mapped[int] = mapped_column(BigInteger)
    accuracy: Mapped[float | None] = mapped_column(Float)
    mean_absolute_error: Mapped[float | None] = mapped_column(Float)
    error_rate: Mapped[float | None] = mapped_column(Float)


async def save_window(session: AsyncSession, values: dict[str, Any]) -> None:
    """Store a window once; a redelivered window changes nothing."""
    await insert_unless_present(session, WindowRow, values, ["model", "version", "window_id"])


async def windows_of(
    session: AsyncSession, model: str, version: int, since: datetime | None, limit: int = 100
) -> list[WindowRow]:
    """The newest windows of a version ending after `since`, oldest first."""
    query = select(WindowRow).where(WindowRow.model == model, WindowRow.version == version)
    if since is not None:
        query = query.where(WindowRow.window_end > since)
    rows = (
        await session.execute(query.order_by(WindowRow.window_end.desc()).limit(limit))
    ).scalars()
    return list(reversed(list(rows)))


async def labeled_since(session: AsyncSession, model: str, since: datetime | None) -> int:
    query = select(func.coalesce(func.sum(WindowRow.labeled), 0)).where(WindowRow.model == model)
    if since is not None:
        query = query.where(WindowRow.window_end > since)
    return int((await session.execute(query)).scalar_one())


async def run_by_trigger(session: AsyncSession, model: str, trigger_key: str) -> RunRow | None:
    return (
        await session.execute(
            select(RunRow).where(RunRow.model == model, RunRow.trigger_key == trigger_key)
        )
    ).scalar_one_or_none()


async def runs_in(
    session: AsyncSession, states: Iterable[RunState], model: str = ""
) -> list[RunRow]:
    query = select(RunRow).where(RunRow.state.in_(list(states)))
    if model:
        query = query.where(RunRow.model == model)
    return list((await session.execute(query.order_by(RunRow.created_at))).scalars())


async def last_run(session: AsyncSession, model: str) -> RunRow | None:
    return (
        await session.execute(
            select(RunRow).where(RunRow.model == model).order_by(RunRow.created_at.desc()).limit(1)
        )
    ).scalar_one_or_none()
