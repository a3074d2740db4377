"""The deployer's tables, their repositories, and the unit of work that commits them with
the events they caused."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
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

from flywheel.deployer.v1 import events_pb2 as events
from flywheel.deployer.v1 import types_pb2 as pb
from flywheel_common.db import ROW_ID, TIMESTAMP, Base, Database, insert_unless_present
from flywheel_common.outbox import Outbox
from flywheel_common.policies import PolicyColumns, PolicyRepository
from flywheel_common.timestamps import stored_utc
from flywheel_common.topics import DEPLOYMENT_EVENTS, DEPLOYMENTS
from flywheel_common.unit_of_work import Fence, SqlUnitOfWork
from flywheel_deployer import converters
from flywheel_deployer.analysis import Window
from flywheel_deployer.domain import (
    ACTIVE_PHASES,
    MetricWindow,
    Phase,
    Policy,
    Rollout,
    RoutingState,
    Strategy,
    Trigger,
)


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
    step_started_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)
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
    arm_weights: Mapped[list[int] | None] = mapped_column(JSON)
    """A bandit's arms' weights now, in the order of its plan's arms."""
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP, index=True)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    finished_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)


class StateRow(Base):
    __tablename__ = "deployment_states"

    model: Mapped[str] = mapped_column(String(128), primary_key=True)
    generation: Mapped[int] = mapped_column(BigInteger)
    state: Mapped[bytes] = mapped_column(LargeBinary)
    """The last DeploymentState published for the model (serialized protobuf)."""
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class WindowRow(Base):
    __tablename__ = "metric_windows"
    __table_args__ = (UniqueConstraint("model", "version", "window_id"),)

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(BigInteger)
    window_id: Mapped[str] = mapped_column(String(256))
    window_start: Mapped[datetime] = mapped_column(TIMESTAMP, index=True)
    window_end: Mapped[datetime] = mapped_column(TIMESTAMP)
    requests: Mapped[int] = mapped_column(BigInteger)
    errors: Mapped[int] = mapped_column(BigInteger)
    latency_p99_ms: Mapped[float] = mapped_column(Float)
    outputs: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    labeled: Mapped[int] = mapped_column(BigInteger, default=0)
    accuracy: Mapped[float | None] = mapped_column(Float)


class SqlRollouts:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self.saved: dict[str, Rollout] = {}
        """Rollouts saved in this unit of work, in the order first saved."""

    async def get(self, rollout_id: str, *, for_update: bool = False) -> Rollout | None:
        if rollout_id in self.saved:
            return self.saved[rollout_id]
        row = await self._session.get(RolloutRow, rollout_id, with_for_update=for_update)
        return None if row is None else rollout_of(row)

    async def active(self, model: str) -> Rollout | None:
        query = select(RolloutRow).where(
            RolloutRow.model == model, RolloutRow.phase.in_([p.value for p in ACTIVE_PHASES])
        )
        row = (await self._session.execute(query.with_for_update())).scalar_one_or_none()
        return None if row is None else rollout_of(row)

    async def by_idempotency_key(self, model: str, key: str) -> Rollout | None:
        query = select(RolloutRow).where(
            RolloutRow.model == model, RolloutRow.idempotency_key == key
        )
        row = (await self._session.execute(query)).scalar_one_or_none()
        return None if row is None else rollout_of(row)

    async def moving_ids(self) -> list[str]:
        query = select(RolloutRow.rollout_id).where(
            RolloutRow.phase.in_([Phase.PENDING.value, Phase.PROGRESSING.value])
        )
        return list((await self._session.execute(query)).scalars())

    async def page(
        self, model: str, phases: tuple[Phase, ...] | None, offset: int, limit: int
    ) -> list[Rollout]:
        query = select(RolloutRow)
        if model:
            query = query.where(RolloutRow.model == model)
        if phases is not None:
            query = query.where(RolloutRow.phase.in_([phase.value for phase in phases]))
        query = query.order_by(RolloutRow.created_at.desc(), RolloutRow.rollout_id)
        rows = (await self._session.execute(query.offset(offset).limit(limit))).scalars()
        return [rollout_of(row) for row in rows]

    def save(self, rollout: Rollout) -> None:
        self.saved[rollout.rollout_id] = rollout

    async def write(self) -> None:
        for rollout in self.saved.values():
            row = await self._session.get(RolloutRow, rollout.rollout_id)
            if row is None:
                row = RolloutRow(
                    rollout_id=rollout.rollout_id,
                    model=rollout.model,
                    policy=(
                        converters.policy_document(rollout.policy)
                        if rollout.policy is not None
                        else {}
                    ),
                    idempotency_key=rollout.idempotency_key or None,
                    created_at=rollout.created_at,
                )
                self._session.add(row)
            write_rollout(row, rollout)


def rollout_of(row: RolloutRow) -> Rollout:
    policy = converters.policy_from_document(row.policy)
    return Rollout(
        rollout_id=row.rollout_id,
        model=row.model,
        version=row.version,
        baseline=row.baseline,
        plan=policy.plan(row.version, row.baseline, Strategy(row.strategy)),
        phase=Phase(row.phase),
        trigger=Trigger(row.trigger),
        started_by=row.started_by,
        reason=row.reason,
        created_at=stored_utc(row.created_at),
        updated_at=stored_utc(row.updated_at),
        step_index=row.step_index,
        step_started_at=stored_utc(row.step_started_at) if row.step_started_at else None,
        paused_from=Phase(row.paused_from) if row.paused_from else None,
        end_reason=row.end_reason,
        superseded_by=row.superseded_by,
        finished_at=stored_utc(row.finished_at) if row.finished_at else None,
        promoted_version=row.promoted_version,
        policy=policy,
        idempotency_key=row.idempotency_key or "",
        steps=converters.steps_from_document(row.steps),
        last_analysis=converters.analysis_from_document(row.last_analysis),
        arm_weights=tuple(row.arm_weights or ()),
    )


def write_rollout(row: RolloutRow, rollout: Rollout) -> None:
    row.version = rollout.version
    row.baseline = rollout.baseline
    row.strategy = rollout.strategy.value
    row.phase = rollout.phase.value
    row.step_index = rollout.step_index
    row.step_started_at = rollout.step_started_at
    row.paused_from = rollout.paused_from.value if rollout.paused_from else None
    row.trigger = rollout.trigger.value
    row.started_by = rollout.started_by
    row.reason = rollout.reason
    row.end_reason = rollout.end_reason
    row.superseded_by = rollout.superseded_by
    row.promoted_version = rollout.promoted_version
    row.updated_at = rollout.updated_at
    row.finished_at = rollout.finished_at
    row.steps = converters.steps_document(rollout.steps)
    row.last_analysis = converters.analysis_document(rollout.last_analysis)
    row.arm_weights = list(rollout.arm_weights) or None


class SqlRoutingStates:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self.saved: dict[str, RoutingState] = {}

    async def get(self, model: str, *, for_update: bool = False) -> RoutingState | None:
        if model in self.saved:
            return self.saved[model]
        row = await self._session.get(StateRow, model, with_for_update=for_update)
        if row is None:
            return None
        return converters.state_of(events.DeploymentState.FromString(row.state))

    def save(self, state: RoutingState) -> None:
        self.saved[state.model] = state

    async def write(self) -> None:
        for state in self.saved.values():
            row = await self._session.get(StateRow, state.model)
            if row is None:
                row = StateRow(model=state.model)
                self._session.add(row)
            row.generation = state.generation
            row.state = converters.state_message(state).SerializeToString()
            row.updated_at = state.updated_at


class SqlMetricWindows:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, window: MetricWindow) -> None:
        summary = window.summary
        values = {
            "model": window.model,
            "version": window.version,
            "window_id": summary.window_id,
            "window_start": window.start,
            "window_end": window.end,
            "requests": summary.requests,
            "errors": summary.errors,
            "latency_p99_ms": summary.latency_p99_ms,
            "outputs": summary.outputs,
            "labeled": summary.labeled,
            "accuracy": summary.accuracy,
        }
        await insert_unless_present(
            self._session, WindowRow, values, ["model", "version", "window_id"]
        )

    async def since(self, model: str, version: int, since: datetime) -> list[Window]:
        query = (
            select(WindowRow)
            .where(
                WindowRow.model == model,
                WindowRow.version == version,
                WindowRow.window_start >= stored_utc(since),
            )
            .order_by(WindowRow.window_start)
        )
        return [
            Window(
                window_id=row.window_id,
                requests=row.requests,
                errors=row.errors,
                latency_p99_ms=row.latency_p99_ms,
                outputs=dict(row.outputs or {}),
                labeled=row.labeled,
                accuracy=row.accuracy,
            )
            for row in (await self._session.execute(query)).scalars()
        ]


class SqlPolicies:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def get(self, model: str) -> Policy | None:
        stored = await POLICIES.get(self._session, model)
        return None if stored is None else converters.policy_of(stored)

    async def put(
        self, policy: Policy, expected_revision: int | None, actor: str, at: datetime
    ) -> Policy:
        message = converters.policy_message(policy)
        stored = await POLICIES.put(self._session, message, expected_revision, actor, at)
        return converters.policy_of(stored)


CommittedStates = Callable[[Iterable[RoutingState]], None]
"""Told the routing states a unit of work committed, after the commit."""


class DeployerUnitOfWork(SqlUnitOfWork):
    """A transaction of the deployer's database: on a normal exit it writes the aggregates
    saved, stages their events in the outbox (rollout events on flywheel.deployment-events,
    routing states on flywheel.deployments) and commits; on an error it rolls back."""

    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        on_commit: CommittedStates = lambda _: None,
        *,
        fence: Fence | None = None,
    ) -> None:
        super().__init__(database, outbox, fence=fence)
        self._on_commit = on_commit

    def _open(self, session: AsyncSession) -> None:
        self.rollouts = SqlRollouts(session)
        self.states = SqlRoutingStates(session)
        self.windows = SqlMetricWindows(session)
        self.policies = SqlPolicies(session)

    def _committed(self) -> None:
        if self.states.saved:
            self._on_commit(self.states.saved.values())

    async def _write(self) -> None:
        await self.rollouts.write()
        await self.states.write()
        for rollout in self.rollouts.saved.values():
            for event in rollout.events:
                self._stage(DEPLOYMENT_EVENTS, converters.event_message(event), rollout.model)
        for state in self.states.saved.values():
            for change in state.events:
                self._stage(DEPLOYMENTS, converters.state_message(change.state), state.model)
