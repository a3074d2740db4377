"""The deployer's use cases: policies, rollouts and their steps, rollbacks, routing state.

Every change is one transaction: the rollout row, the routing state with its generation,
and the events staged in the outbox commit together, so a deployer killed at any point
resumes from its database without repeating a step or losing an event.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from google.protobuf.message import Message
from opentelemetry.metrics import CallbackOptions, Observation
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flywheel.deployer.v1 import events_pb2 as events
from flywheel.deployer.v1 import types_pb2 as pb
from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel.registry.v1 import events_pb2 as registry_events
from flywheel.registry.v1 import types_pb2 as registry_types
from flywheel_common.auth import current_principal
from flywheel_common.db import Database
from flywheel_common.errors import FailedPrecondition, InvalidArgument, NotFound
from flywheel_common.outbox import Outbox
from flywheel_common.registry_client import RegistryClient
from flywheel_common.timestamps import duration, stored_utc, timestamp
from flywheel_common.topics import DEPLOYMENT_EVENTS, DEPLOYMENTS
from flywheel_deployer import storage
from flywheel_deployer.analysis import Analysis, Decision, Window, analyse, merge
from flywheel_deployer.converters import (
    PHASES,
    STRATEGY_NUMBERS,
    TRIGGER_NUMBERS,
    analysis_message,
    default_policy,
    deployment_state,
    plan_of,
    policy_from_json,
    rollout_message,
    routing_of,
    strategy_of,
    to_json,
    validate_policy,
)
from flywheel_deployer.domain import ACTIVE_PHASES, Phase, Rollout, Routing, Strategy, Trigger
from flywheel_deployer.fleet import GatewayFleet

log = logging.getLogger(__name__)

PRODUCTION = "production"
MAX_PAGE_SIZE = 200


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Loaded:
    """A rollout row with its domain view and the policy it started with."""

    row: storage.RolloutRow
    rollout: Rollout
    policy: pb.DeploymentPolicy


class Deployer:
    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        registry: RegistryClient,
        fleet: GatewayFleet,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._database = database
        self._outbox = outbox
        self._registry = registry
        self._fleet = fleet
        self._clock = clock
        self.on_change: Callable[[], None] = lambda: None
        self._weights: dict[str, dict[int, int]] = {}
        """Each model's published traffic split, for the weight gauge."""

    # Policies

    async def set_policy(
        self, policy: pb.DeploymentPolicy, expected_revision: int | None
    ) -> pb.DeploymentPolicy:
        validate_policy(policy)
        async with self._database.transaction() as session:
            return await storage.POLICIES.put(
                session, policy, expected_revision, current_principal().subject, self._clock()
            )

    async def get_policy(self, model: str) -> tuple[pb.DeploymentPolicy, bool]:
        async with self._database.transaction() as session:
            return await self._policy(session, model)

    async def _policy(self, session: AsyncSession, model: str) -> tuple[pb.DeploymentPolicy, bool]:
        stored = await storage.POLICIES.get(session, model)
        return (default_policy(model), True) if stored is None else (stored, False)

    # Starting rollouts

    async def start_rollout(
        self,
        model: str,
        version: int,
        *,
        strategy: int = pb.STRATEGY_UNSPECIFIED,
        policy_override: pb.DeploymentPolicy | None = None,
        reason: str = "",
        supersede: bool = False,
        idempotency_key: str = "",
        trigger: Trigger = Trigger.MANUAL,
    ) -> pb.Rollout:
        if not model:
            raise InvalidArgument("model is required")
        if version < 1:
            raise InvalidArgument(f"version must be 1 or more, not {version}")
        await self._registry.servable_version(model, version)
        async with self._database.transaction() as session:
            if idempotency_key:
                existing = (
                    await session.execute(
                        select(storage.RolloutRow).where(
                            storage.RolloutRow.model == model,
                            storage.RolloutRow.idempotency_key == idempotency_key,
                        )
                    )
                ).scalar_one_or_none()
                if existing is not None:
                    return self._message(self._load(existing))
            policy, _ = await self._policy(session, model)
            if policy_override is not None and policy_override.ByteSize():
                policy = pb.DeploymentPolicy()
                policy.CopyFrom(policy_override)
                policy.model = model
            if strategy != pb.STRATEGY_UNSPECIFIED:
                strategy_of(strategy)  # rejects unknown numbers with the accepted names
                policy.strategy = strategy  # type: ignore[assignment]
            running = await storage.active_rollout(session, model)
            state = await session.get(storage.StateRow, model)
            serving = _serving_version(state)
            baseline = running.baseline if running is not None else serving
            if baseline == version:
                baseline = 0 if running is None else running.baseline
            now = self._clock()
            rollout_id = uuid.uuid4().hex
            if running is not None:
                if not supersede:
                    raise FailedPrecondition(
                        f"rollout {running.rollout_id} of {model!r} is still {running.phase}; "
                        "set supersede to replace it, or end it first"
                    )
                old = self._load(running)
                ended = old.rollout.supersede(rollout_id, now)
                self._store(running, ended)
                self._stage(
                    session,
                    events.RolloutAborted(
                        rollout_id=ended.rollout_id,
                        model=model,
                        version=ended.version,
                        restored_version=baseline,
                        superseded=True,
                        superseded_by=rollout_id,
                        actor=current_principal().subject,
                        reason=f"superseded by a rollout of version {version}",
                        occurred_at=timestamp(now),
                    ),
                    model,
                )
            plan = plan_of(policy, version, baseline)
            if plan.strategy is Strategy.SHADOW and not baseline:
                raise FailedPrecondition(
                    f"a shadow rollout needs a version serving {model!r} to mirror; deploy "
                    "one first"
                )
            rollout = Rollout(
                rollout_id=rollout_id,
                model=model,
                version=version,
                baseline=baseline,
                plan=plan,
                phase=Phase.PENDING,
                trigger=trigger,
                started_by=current_principal().subject,
                reason=reason,
                created_at=now,
                updated_at=now,
            )
            row = self._insert(session, rollout, policy, idempotency_key)
            self._stage(
                session,
                events.RolloutStarted(
                    rollout_id=rollout_id,
                    model=model,
                    version=version,
                    baseline_version=baseline,
                    strategy=policy.strategy,
                    policy=policy,
                    trigger=TRIGGER_NUMBERS[trigger],
                    superseded_rollout_id=running.rollout_id if running is not None else "",
                    actor=rollout.started_by,
                    reason=reason,
                    occurred_at=timestamp(now),
                ),
                model,
            )
            await self._publish_routing(session, rollout, policy)
            loaded = Loaded(row, rollout, policy)
        self.on_change()
        return self._message(loaded)

    async def on_promotion(
        self, event: registry_events.ModelVersionPromoted, event_id: str
    ) -> None:
        """A version became `production`: roll it out if the model's policy says so."""
        if event.alias != PRODUCTION:
            return
        if event.cause == registry_types.ALIAS_CHANGE_CAUSE_ROLLBACK:
            return  # the registry following our own rollback: traffic is already there
        async with self._database.transaction() as session:
            policy, _ = await self._policy(session, event.model)
            state = await session.get(storage.StateRow, event.model)
            running = await storage.active_rollout(session, event.model)
        if not policy.auto_rollout_on_promotion:
            log.info("promotion without automatic rollout", extra={"model": event.model})
            return
        if running is None and _serving_version(state) == event.version:
            return  # already serving it
        if running is not None and running.version == event.version:
            return  # already rolling it out
        await self.start_rollout(
            event.model,
            event.version,
            reason=event.reason or f"promoted to production by {event.actor or 'the registry'}",
            supersede=True,
            idempotency_key=f"promotion:{event_id}",
            trigger=Trigger.PROMOTION,
        )

    # Operator actions

    async def pause(self, rollout_id: str, reason: str) -> pb.Rollout:
        async def change(loaded: Loaded, session: AsyncSession, now: datetime) -> Rollout:
            return loaded.rollout.pause(now, reason or f"paused by {current_principal().subject}")

        return await self._change(rollout_id, change)

    async def resume(self, rollout_id: str) -> pb.Rollout:
        async def change(loaded: Loaded, session: AsyncSession, now: datetime) -> Rollout:
            return loaded.rollout.resume(now)

        return await self._change(rollout_id, change)

    async def promote_now(self, rollout_id: str, version: int, reason: str) -> pb.Rollout:
        async def change(loaded: Loaded, session: AsyncSession, now: datetime) -> Rollout:
            rollout = loaded.rollout
            _require_active(rollout, "promoted")
            target = version or rollout.version
            allowed = {rollout.version} | {arm.version for arm in rollout.plan.arms}
            if target not in allowed:
                raise InvalidArgument(
                    f"version {target} is not part of rollout {rollout_id}; choose one of "
                    + ", ".join(str(v) for v in sorted(allowed))
                )
            ended = rollout.finish(
                Phase.SUCCEEDED,
                now,
                reason or f"promoted now by {current_principal().subject}",
                promoted_version=target if target != rollout.version else 0,
            )
            self._completed(session, ended, None, forced=True)
            return ended

        return await self._change(rollout_id, change)

    async def abort(self, rollout_id: str, reason: str) -> pb.Rollout:
        async def change(loaded: Loaded, session: AsyncSession, now: datetime) -> Rollout:
            rollout = loaded.rollout
            _require_active(rollout, "aborted")
            ended = rollout.finish(
                Phase.ABORTED, now, reason or f"aborted by {current_principal().subject}"
            )
            self._stage(
                session,
                events.RolloutAborted(
                    rollout_id=rollout.rollout_id,
                    model=rollout.model,
                    version=rollout.version,
                    restored_version=rollout.baseline,
                    actor=current_principal().subject,
                    reason=ended.end_reason,
                    occurred_at=timestamp(now),
                ),
                rollout.model,
            )
            return ended

        return await self._change(rollout_id, change)

    async def rollback(self, model: str, to_version: int, reason: str) -> pb.Rollout:
        """All traffic to a named older version at once; the registry moves `production`."""
        if to_version < 1:
            raise InvalidArgument("to_version must name the version to roll back to")
        await self._registry.servable_version(model, to_version)
        async with self._database.transaction() as session:
            state = await session.get(storage.StateRow, model)
            serving = _serving_version(state)
            running = await storage.active_rollout(session, model)
            if state is None and running is None:
                raise FailedPrecondition(f"{model!r} is not deployed; nothing to roll back")
            now = self._clock()
            actor = current_principal().subject
            why = reason or f"rolled back to version {to_version} by {actor}"
            rolled_back = serving
            if running is not None:
                old = self._load(running)
                rolled_back = old.rollout.version
                self._store(running, old.rollout.finish(Phase.ROLLED_BACK, now, why))
            if rolled_back == to_version and running is None:
                raise FailedPrecondition(f"{model!r} already serves version {to_version}")
            policy, _ = await self._policy(session, model)
            rollout = Rollout(
                rollout_id=uuid.uuid4().hex,
                model=model,
                version=to_version,
                baseline=rolled_back,
                plan=plan_of(policy, to_version, rolled_back, Strategy.DIRECT),
                phase=Phase.SUCCEEDED,
                trigger=Trigger.ROLLBACK,
                started_by=actor,
                reason=why,
                created_at=now,
                updated_at=now,
                end_reason=why,
                finished_at=now,
            )
            row = self._insert(session, rollout, policy)
            self._stage(
                session,
                events.RolloutRolledBack(
                    rollout_id=running.rollout_id if running is not None else rollout.rollout_id,
                    model=model,
                    rolled_back_version=rolled_back,
                    restored_version=to_version,
                    automatic=False,
                    actor=actor,
                    reason=why,
                    occurred_at=timestamp(now),
                ),
                model,
            )
            await self._publish_routing(session, rollout, policy)
            loaded = Loaded(row, rollout, policy)
        self.on_change()
        return self._message(loaded)

    # Queries

    async def get_rollout(self, rollout_id: str) -> pb.Rollout:
        async with self._database.transaction() as session:
            row = await session.get(storage.RolloutRow, rollout_id)
            if row is None:
                raise NotFound(f"rollout {rollout_id!r} does not exist")
            return self._message(self._load(row))

    async def list_rollouts(
        self, model: str, phases: list[int], page_size: int, page_token: str
    ) -> tuple[list[pb.Rollout], str]:
        size = min(page_size or 50, MAX_PAGE_SIZE)
        if page_size < 0:
            raise InvalidArgument("page_size cannot be negative")
        offset = 0
        if page_token:
            try:
                offset = int(page_token)
            except ValueError:
                raise InvalidArgument("page_token is not one this server issued") from None
        query = select(storage.RolloutRow)
        if model:
            query = query.where(storage.RolloutRow.model == model)
        if phases:
            wanted = [PHASES[p].value for p in phases if p in PHASES]
            query = query.where(storage.RolloutRow.phase.in_(wanted))
        query = query.order_by(storage.RolloutRow.created_at.desc(), storage.RolloutRow.rollout_id)
        async with self._database.transaction() as session:
            rows = list((await session.execute(query.offset(offset).limit(size + 1))).scalars())
        next_token = str(offset + size) if len(rows) > size else ""
        return [self._message(self._load(row)) for row in rows[:size]], next_token

    async def deployment_state(
        self, model: str
    ) -> tuple[events.DeploymentState, list[pb.GatewayReadiness], pb.Rollout | None]:
        async with self._database.transaction() as session:
            state = await session.get(storage.StateRow, model)
            running = await storage.active_rollout(session, model)
            if state is None:
                raise NotFound(f"{model!r} has never been deployed")
            active = self._message(self._load(running)) if running is not None else None
        return (
            events.DeploymentState.FromString(state.state),
            self._fleet.readiness(model),
            active,
        )

    # Metric windows from the drift detector

    async def record_window(
        self, session: AsyncSession, window: drift_events.ModelMetricsWindow
    ) -> None:
        outputs: dict[str, int] = {}
        for output in window.output_histograms:
            histogram = output.histogram
            labels = list(histogram.categories) or [
                f"{lo:g}..{hi:g}" for lo, hi in pairwise(histogram.bin_edges)
            ]
            for label, count in zip(labels, histogram.counts, strict=False):
                key = f"{output.output}:{label}"
                outputs[key] = outputs.get(key, 0) + int(count)
        label_metrics = window.label_metrics
        await storage.save_window(
            session,
            {
                "model": window.model,
                "version": window.version,
                "window_id": window.window.window_id,
                "window_start": window.window.start.ToDatetime(UTC),
                "window_end": window.window.end.ToDatetime(UTC),
                "requests": window.request_count,
                "errors": window.error_count,
                "latency_p99_ms": window.latency.p99_ms,
                "outputs": outputs,
                "labeled": label_metrics.labeled_count,
                "accuracy": (
                    label_metrics.accuracy if label_metrics.HasField("accuracy") else None
                ),
            },
        )

    # The engine: one pass over every running rollout

    async def reconcile(self) -> None:
        async with self._database.transaction() as session:
            ids = list(
                (
                    await session.execute(
                        select(storage.RolloutRow.rollout_id).where(
                            storage.RolloutRow.phase.in_(
                                [Phase.PENDING.value, Phase.PROGRESSING.value]
                            )
                        )
                    )
                ).scalars()
            )
        for rollout_id in ids:
            try:
                await self._step(rollout_id)
            except Exception:
                log.exception("rollout step failed", extra={"rollout_id": rollout_id})

    async def _step(self, rollout_id: str) -> None:
        changed = False
        async with self._database.transaction() as session:
            row = await session.get(storage.RolloutRow, rollout_id, with_for_update=True)
            if row is None or row.phase not in (Phase.PENDING.value, Phase.PROGRESSING.value):
                return
            loaded = self._load(row)
            rollout, now = loaded.rollout, self._clock()
            if rollout.phase is Phase.PENDING:
                after = self._prepare(session, loaded, now)
            else:
                after = await self._judge(session, loaded, now)
            if after is not None and after != rollout:
                self._store(row, after)
                await self._publish_routing(session, after, loaded.policy)
                changed = True
        if changed:
            self.on_change()

    def _prepare(self, session: AsyncSession, loaded: Loaded, now: datetime) -> Rollout | None:
        """PENDING: wait until every live gateway holds the candidate, then start."""
        rollout = loaded.rollout
        pending = self._fleet.pending(rollout.model, rollout.needed_versions())
        if pending:
            waited = (now - rollout.created_at).total_seconds()
            if waited < rollout.plan.gateway_ready_timeout_seconds:
                return None
            reason = (
                f"gateways {', '.join(pending)} did not report version {rollout.version} ready "
                f"within {rollout.plan.gateway_ready_timeout_seconds:.0f}s"
            )
            ended = rollout.finish(Phase.ROLLED_BACK, now, reason)
            self._rolled_back(session, ended, None, automatic=True)
            return ended
        if rollout.strategy is Strategy.DIRECT or (
            rollout.strategy is Strategy.CANARY and not rollout.baseline
        ):
            ended = rollout.finish(Phase.SUCCEEDED, now, "every live gateway holds the version")
            self._completed(session, ended, None, forced=False)
            return ended
        started = rollout.begin(now)
        self._open_step(loaded.row, started, now)
        self._stage(
            session,
            events.RolloutStepAdvanced(
                rollout_id=rollout.rollout_id,
                model=rollout.model,
                version=rollout.version,
                baseline_version=rollout.baseline,
                from_step_index=-1,
                to_step_index=0,
                from_weight_percent=0,
                to_weight_percent=started.weight,
                actor="flywheel-deployer",
                occurred_at=timestamp(now),
            ),
            rollout.model,
        )
        return started

    async def _judge(self, session: AsyncSession, loaded: Loaded, now: datetime) -> Rollout | None:
        """PROGRESSING: analyse the step (canary, shadow) and act on the decision."""
        rollout = loaded.rollout
        if rollout.strategy not in (Strategy.CANARY, Strategy.SHADOW):
            return None  # A/B arms hold until an operator ends the test
        assert rollout.step_started_at is not None
        analysis = await self._analyse(session, rollout, now)
        result = analysis_message(analysis, rollout)
        if analysis.decision is Decision.WAIT:
            return None
        loaded.row.last_analysis = to_json(result)
        if analysis.decision is Decision.ROLLBACK:
            ended = rollout.finish(Phase.ROLLED_BACK, now, analysis.summary)
            self._close_step(loaded.row, now, result)
            self._rolled_back(session, ended, result, automatic=True)
            return ended
        if analysis.decision is Decision.PAUSE:
            return rollout.pause(now, analysis.summary)
        if rollout.strategy is Strategy.SHADOW:
            if not rollout.plan.promote_shadow_on_success:
                return None  # the candidate passed; an operator promotes it
            ended = rollout.finish(Phase.SUCCEEDED, now, analysis.summary)
            self._close_step(loaded.row, now, result)
            self._completed(session, ended, result, forced=False)
            return ended
        if analysis.decision is Decision.PROMOTE:
            ended = rollout.finish(Phase.SUCCEEDED, now, analysis.summary)
            self._close_step(loaded.row, now, result)
            self._completed(session, ended, result, forced=False)
            return ended
        advanced = rollout.advance(now)
        self._close_step(loaded.row, now, result)
        self._open_step(loaded.row, advanced, now)
        self._stage(
            session,
            events.RolloutStepAdvanced(
                rollout_id=rollout.rollout_id,
                model=rollout.model,
                version=rollout.version,
                baseline_version=rollout.baseline,
                from_step_index=rollout.step_index,
                to_step_index=advanced.step_index,
                from_weight_percent=rollout.weight,
                to_weight_percent=advanced.weight,
                analysis=result,
                actor="flywheel-deployer",
                occurred_at=timestamp(now),
            ),
            rollout.model,
        )
        return advanced

    async def _analyse(self, session: AsyncSession, rollout: Rollout, now: datetime) -> Analysis:
        assert rollout.step_started_at is not None
        step_start = stored_utc(rollout.step_started_at)
        candidate = await storage.windows_since(session, rollout.model, rollout.version, step_start)
        # The baseline is judged over the whole rollout: at a 100% step it serves nothing.
        baseline = await storage.windows_since(
            session, rollout.model, rollout.baseline, stored_utc(rollout.created_at)
        )
        return analyse(
            rollout.plan.rule,
            rollout.plan.thresholds,
            merge(_window(w) for w in candidate),
            merge(_window(w) for w in baseline),
            (now - step_start).total_seconds(),
            rollout.last_step,
        )

    # Shared pieces

    async def _change(
        self, rollout_id: str, change: Callable[[Loaded, AsyncSession, datetime], Any]
    ) -> pb.Rollout:
        async with self._database.transaction() as session:
            row = await session.get(storage.RolloutRow, rollout_id, with_for_update=True)
            if row is None:
                raise NotFound(f"rollout {rollout_id!r} does not exist")
            loaded = self._load(row)
            after: Rollout = await change(loaded, session, self._clock())
            if after != loaded.rollout:
                self._store(row, after)
                await self._publish_routing(session, after, loaded.policy)
            result = Loaded(row, after, loaded.policy)
        self.on_change()
        return self._message(result)

    def _completed(
        self,
        session: AsyncSession,
        rollout: Rollout,
        analysis: pb.AnalysisResult | None,
        forced: bool,
    ) -> None:
        finished = rollout.finished_at or self._clock()
        self._stage(
            session,
            events.RolloutCompleted(
                rollout_id=rollout.rollout_id,
                model=rollout.model,
                version=rollout.promoted_version or rollout.version,
                previous_version=rollout.baseline,
                strategy=STRATEGY_NUMBERS[rollout.strategy],
                analysis=analysis,
                forced=forced,
                actor=current_principal().subject if forced else "flywheel-deployer",
                reason=rollout.end_reason,
                duration=duration((finished - stored_utc(rollout.created_at)).total_seconds()),
                occurred_at=timestamp(finished),
            ),
            rollout.model,
        )

    def _rolled_back(
        self,
        session: AsyncSession,
        rollout: Rollout,
        analysis: pb.AnalysisResult | None,
        automatic: bool,
    ) -> None:
        self._stage(
            session,
            events.RolloutRolledBack(
                rollout_id=rollout.rollout_id,
                model=rollout.model,
                rolled_back_version=rollout.version,
                restored_version=rollout.baseline,
                automatic=automatic,
                analysis=analysis,
                actor="flywheel-deployer",
                reason=rollout.end_reason,
                occurred_at=timestamp(rollout.finished_at or self._clock()),
            ),
            rollout.model,
        )

    def _stage(self, session: AsyncSession, event: Message, model: str) -> None:
        self._outbox.stage(session, DEPLOYMENT_EVENTS, event, subject=model)

    async def _publish_routing(
        self, session: AsyncSession, rollout: Rollout, policy: pb.DeploymentPolicy
    ) -> None:
        """Publish the model's routing if it changed, with the next generation."""
        routing = rollout.routing()
        row = await session.get(storage.StateRow, rollout.model, with_for_update=True)
        if row is not None and _routing_of(row) == routing:
            return
        generation = (row.generation if row is not None else 0) + 1
        version_policy = (
            policy.gateway_version_policy if policy.HasField("gateway_version_policy") else None
        )
        state = deployment_state(
            rollout.model, routing, rollout.strategy, generation, rollout.rollout_id, version_policy
        )
        if row is None:
            row = storage.StateRow(model=rollout.model)
            session.add(row)
        row.generation = generation
        row.state = state.SerializeToString()
        row.updated_at = self._clock()
        self._outbox.stage(session, DEPLOYMENTS, state, subject=rollout.model)
        weights = {route.version: route.weight_percent for route in state.routes}
        sa_event.listen(
            session.sync_session,
            "after_commit",
            lambda _: self._weights.__setitem__(rollout.model, weights),
            once=True,
        )

    def traffic_weights(self, _: CallbackOptions) -> Iterable[Observation]:
        """Each routed version's share of its model's traffic, as last committed."""
        for model, weights in list(self._weights.items()):
            for version, weight in weights.items():
                yield Observation(weight, {"model": model, "version": str(version)})

    def _open_step(self, row: storage.RolloutRow, rollout: Rollout, now: datetime) -> None:
        step = pb.RolloutStep(index=rollout.step_index, weight_percent=rollout.weight)
        step.started_at.CopyFrom(timestamp(now))
        row.steps = [*row.steps, to_json(step)]

    def _close_step(
        self, row: storage.RolloutRow, now: datetime, analysis: pb.AnalysisResult
    ) -> None:
        if not row.steps:
            return
        last = dict(row.steps[-1])
        last["finished_at"] = timestamp(now).ToJsonString()
        last["analysis"] = to_json(analysis)
        row.steps = [*row.steps[:-1], last]

    def _load(self, row: storage.RolloutRow) -> Loaded:
        policy = policy_from_json(row.policy)
        strategy = Strategy(row.strategy)
        rollout = Rollout(
            rollout_id=row.rollout_id,
            model=row.model,
            version=row.version,
            baseline=row.baseline,
            plan=plan_of(policy, row.version, row.baseline, strategy),
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
        )
        return Loaded(row, rollout, policy)

    def _insert(
        self,
        session: AsyncSession,
        rollout: Rollout,
        policy: pb.DeploymentPolicy,
        idempotency_key: str = "",
    ) -> storage.RolloutRow:
        row = storage.RolloutRow(
            rollout_id=rollout.rollout_id,
            model=rollout.model,
            policy=to_json(policy),
            idempotency_key=idempotency_key or None,
            steps=[],
            created_at=rollout.created_at,
        )
        self._store(row, rollout)
        session.add(row)
        return row

    @staticmethod
    def _store(row: storage.RolloutRow, rollout: Rollout) -> None:
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

    def _message(self, loaded: Loaded) -> pb.Rollout:
        rollout = loaded.rollout
        pending = (
            self._fleet.pending(rollout.model, rollout.needed_versions())
            if rollout.phase is Phase.PENDING
            else []
        )
        return rollout_message(
            rollout, loaded.policy, loaded.row.steps or [], loaded.row.last_analysis, pending
        )


def _require_active(rollout: Rollout, verb: str) -> None:
    if rollout.phase not in ACTIVE_PHASES:
        raise FailedPrecondition(
            f"rollout {rollout.rollout_id} has finished ({rollout.phase}); it cannot be {verb}"
        )


def _serving_version(state: storage.StateRow | None) -> int:
    return _routing_of(state).serving_version if state is not None else 0


def _routing_of(row: storage.StateRow) -> Routing:
    return routing_of(events.DeploymentState.FromString(row.state))


def _window(row: storage.WindowRow) -> Window:
    return Window(
        window_id=row.window_id,
        requests=row.requests,
        errors=row.errors,
        latency_p99_ms=row.latency_p99_ms,
        outputs=dict(row.outputs or {}),
        labeled=row.labeled,
        accuracy=row.accuracy,
    )
