"""The deployer's tables: policies, rollouts, the published routing state, metric windows."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from flywheel.deployer.v1 import types_pb2 as pb
from flywheel_common.db import Base, insert_unless_present
from flywheel_common.policies import PolicyColumns, PolicyRepository
from flywheel_deployer.domain import ACTIVE_PHASES

_ID = BigInteger().with_variant(Integer, "sqlite")
_TIME = DateTime(timezone=True)


class PolicyRow(PolicyColumns, Base):
    __tablename__ = "deployment_policies"


POLICIES = PolicyRepository(PolicyRow, pb.DeploymentPolicy, "policy")


class RolloutRow(Base):
    __tablename__ = "rollouts"
    __table_args__ = (UniqueConstraint("model", "idempotency_key"),)

    rollout_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(128), index=True)
    version: Mapped[int] = mapped_column(BigInteger)
    baseline: Mapped[int] = mapped_column(BigInteger)
    strategy: Mapped[str] = mapped_column(String(16))
    phase: Mapped[str] = mapped_column(String(16), index=True)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The policy the rollout started with (JSON form of DeploymentPolicy)."""
    step_index: Mapped[int] = mapped_column(Integer)
    step_started_at: Mapped[datetime | None] = mapped_column(_TIME)
    paused_from: Mapped[str | None] = mapped_column(String(16))
    trigger: Mapped[str] = mapped_column(String(16))
    started_by: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text, default="")
    end_reason: Mapped[str] = mapped_column(Text, default="")
    superseded_by: Mapped[str] = mapped_column(String(64), default="")
    promoted_version: Mapped[int] = mapped_column(BigInteger, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(256))
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    """RolloutStep messages in JSON form: each step's weight, times and analysis."""
    last_analysis: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(_TIME, index=True)
    updated_at: Mapped[datetime] = mapped_column(_TIME)
    finished_at: Mapped[datetime | None] = mapped_column(_TIME)


class StateRow(Base):
    __tablename__ = "deployment_states"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    """The last DeploymentState published for the model (serialized protobuf)."""
    updated_at: Mapped[datetime] = mapped_column(_TIME)


class WindowRow(Base):
    __tablename__ = "metric_windows"
    __table_args__ = (UniqueConstraint("model", "version", "window_id"),)

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(BigInteger)
    window_id: Mapped[str] = mapped_column(String(256))
    window_start: Mapped[datetime] = mapped_column(_TIME, index=True)
    window_end: Mapped[datetime] = mapped_column(_TIME)
    requests: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    latency_p99_ms: Mapped[float] = mapped_column(Float)
    outputs: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    labeled: Mapped[int] = mapped_column(BigInteger, default=0)
    accuracy: Mapped[float | None] = mapped_column(Float)


async def active_rollout(session: AsyncSession, model: str) -> RolloutRow | None:
    return (
        await session.execute(
            select(RolloutRow)
            .where(
                RolloutRow.model == model, RolloutRow.phase.in_([p.value for p in ACTIVE_PHASES])
            )
            .with_for_update()
        )
    ).scalar_one_or_none()


async def save_window(session: AsyncSession, values: dict[str, Any]) -> None:
    """Store a window once; a redelivered window (same id) changes nothing."""
    await insert_unless_present(session, WindowRow, values, ["model", "version", "window_id"])


async def windows_since(
    session: AsyncSession, model: str, version: int, since: datetime
) -> list[WindowRow]:
    return list(
        (
            await session.execute(
                select(WindowRow)
                .where(
                    WindowRow.model == model,
                    WindowRow.version == version,
                    WindowRow.window_start >= since,
                )
                .order_by(WindowRow.window_start)
            )
        ).scalars()
    )
