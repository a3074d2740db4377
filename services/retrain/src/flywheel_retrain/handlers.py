"""The retrain trigger's use cases: policies, turning causes into runs, and run decisions.

A run's row and the event that announces its change commit together (outbox), and a run is
unique per model and trigger, so a redelivered alert, a burst of alerts or a restart never
starts a second run for one cause.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import Message
from opentelemetry import metrics
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.exc import StaleDataError

from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel.registry.v1 import types_pb2 as registry_types
from flywheel.retrain.v1 import events_pb2 as events
from flywheel.retrain.v1 import types_pb2 as pb
from flywheel_common.auth import current_principal, require_role
from flywheel_common.db import Database
from flywheel_common.errors import Aborted, FailedPrecondition, InvalidArgument, NotFound
from flywheel_common.outbox import Outbox
from flywheel_common.registry_client import RegistryClient
from flywheel_common.settings import Role
from flywheel_common.timestamps import stored_utc, timestamp
from flywheel_common.topics import RETRAIN_EVENTS
from flywheel_retrain import domain, storage
from flywheel_retrain.converters import (
    alert_of,
    alert_rule,
    decay_rule,
    decay_value,
    default_policy,
    from_json,
    guards,
    run_message,
    to_json,
    validate_policy,
)
from flywheel_retrain.domain import ACTIVE, IN_PROGRESS, TERMINAL, RunState, check_transition

log = logging.getLogger(__name__)
_runs_ended = metrics.get_meter(__name__).create_counter(
    "flywheel.retrain.runs", description="Retrain runs ended, by model and outcome"
)

PRODUCTION = "production"
SYSTEM_ACTOR = "system:retrain"
MAX_PAGE_SIZE = 200
_CHANGE_ATTEMPTS = 5


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Cause:
    """A trigger that met the policy, before the guards have spoken."""

    kind: pb.TriggerKind.ValueType
    source_id: str
    triggered_by: str
    reason: str
    actor: str = SYSTEM_ACTOR
    occurred_at: datetime | None = None

    @property
    def key(self) -> str:
        return f"{pb.TriggerKind.Name(self.kind)}:{self.source_id}"

    def message(self) -> pb.Trigger:
        trigger = pb.Trigger(
            kind=self.kind,
            source_id=self.source_id,
            triggered_by=self.triggered_by,
            reason=self.reason,
            actor=self.actor,
        )
        if self.occurred_at is not None:
            trigger.occurred_at.CopyFrom(timestamp(self.occurred_at))
        return trigger


class StaleRun(Exception):
    """The run moved on (cancelled, or finished elsewhere) before this change applied."""


class Retrainer:
    def __init__(
        self,
        database: Database,
        outbox: Outbox,
        registry: RegistryClient,
        default_executor: int,
        wakeup: Callable[[], None],
        cancel_run: Callable[[str], None],
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        """`wakeup` tells the run engine that runs or policies changed; `cancel_run` stops
        the task executing a run this process is working on."""
        self._database = database
        self._outbox = outbox
        self._registry = registry
        self._default_executor = default_executor
        self._clock = clock or _now
        self._model_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self.on_change = wakeup
        self.on_cancel = cancel_run

    def now(self) -> datetime:
        return self._clock()

    def model_lock(self, model: str) -> asyncio.Lock:
        """Serialises this process's decisions about one model: new runs, promotions,
        cancellations and sign-offs."""
        return self._model_locks[model]

    # Policies

    async def set_policy(
        self, policy: pb.RetrainPolicy, expected_revision: int | None
    ) -> pb.RetrainPolicy:
        validate_policy(policy)
        async with self._database.transaction() as session:
            stored = await storage.POLICIES.put(
                session, policy, expected_revision, current_principal().subject, self._clock()
            )
        self.on_change()
        return stored

    async def get_policy(self, model: str) -> tuple[pb.RetrainPolicy, bool]:
        async with self._database.transaction() as session:
            return await self._policy(session, model)

    async def _policy(self, session: AsyncSession, model: str) -> tuple[pb.RetrainPolicy, bool]:
        stored = await storage.POLICIES.get(session, model)
        return (default_policy(model), True) if stored is None else (stored, False)

    async def scheduled_policies(self) -> list[pb.RetrainPolicy]:
        async with self._database.transaction() as session:
            policies = await storage.POLICIES.every(session)
        return [p for p in policies if p.enabled and p.schedule_trigger.enabled]

    # Causes

    async def on_alert(self, message: drift_events.DriftAlert) -> None:
        """A drift alert: a run when the policy says it warrants one and the guards agree."""
        alert = alert_of(message)
        policy, _ = await self.get_policy(alert.model)
        why_not = domain.alert_matches(alert_rule(policy), alert)
        if why_not is not None:
            log.info("alert %s of %s starts no run: %s", alert.alert_id, alert.model, why_not)
            return
        kinds = ", ".join(sorted(alert.kinds)) or "drift"
        cause = Cause(
            pb.TRIGGER_KIND_DRIFT_ALERT,
            alert.alert_id,
            f"drift-alert:{alert.alert_id}",
            f"{alert.severity.name} {kinds} alert on version {alert.version}: "
            f"{alert.drifted_features} drifted feature(s)",
            occurred_at=message.occurred_at.ToDatetime(UTC)
            if message.HasField("occurred_at")
            else None,
        )
        await self._start(alert.model, cause, manual=False)

    async def record_window(
        self, session: AsyncSession, message: drift_events.ModelMetricsWindow
    ) -> None:
        """Store a metric window once: its labels count toward the guards, its values
        toward decay. Runs inside the consumer's deduplicating transaction."""
        labels = message.label_metrics
        end = message.window.end.ToDatetime(UTC) if message.window.HasField("end") else self.now()
        await storage.save_window(
            session,
            {
                "model": message.model,
                "version": message.version,
                "window_id": message.window.window_id,
                "window_end": end,
                "labeled": labels.labeled_count,
                "accuracy": labels.accuracy if labels.HasField("accuracy") else None,
                "mean_absolute_error": labels.mean_absolute_error
                if labels.HasField("mean_absolute_error")
                else None,
                "error_rate": message.error_count / message.request_count
                if message.request_count
                else None,
            },
        )

    async def decay_cause(self, model: str, version: int) -> Cause | None:
        """The decay the stored windows of a version complete since the model's last run,
        if any. Evaluated again on every delivery: the cause is named by its last window,
        so a repeated evaluation finds the run it started instead of starting another."""
        async with self._database.transaction() as session:
            policy, _ = await self._policy(session, model)
            rule = decay_rule(policy)
            if not rule.enabled:
                return None
            last = await storage.last_run(session, model)
            since = stored_utc(last.created_at) if last is not None else None
            windows = await storage.windows_of(session, model, version, since)
        tracker = domain.DecayTracker(rule)
        fired = None
        for window in windows:
            value = decay_value(policy.decay_trigger.metric, window)
            observed = domain.MetricWindow(
                window.window_id, window.model, window.version, value, window.labeled
            )
            fired = window if tracker.observe(observed) else None
        if fired is None:
            return None
        metric = pb.DecayMetric.Name(policy.decay_trigger.metric).removeprefix("DECAY_METRIC_")
        return Cause(
            pb.TRIGGER_KIND_METRIC_DECAY,
            fired.window_id,
            f"metric-decay:{fired.window_id}",
            f"{metric.lower()} of version {version} past {rule.threshold:g} for "
            f"{rule.consecutive_windows} window(s)",
            occurred_at=stored_utc(fired.window_end),
        )

    async def on_decay(self, model: str, cause: Cause) -> None:
        await self._start(model, cause, manual=False)

    async def on_schedule(self, model: str, slot: datetime, cron: str) -> None:
        cause = Cause(
            pb.TRIGGER_KIND_SCHEDULE,
            f"{cron}@{slot.isoformat()}",
            f"schedule:{cron}@{slot.isoformat()}",
            f"scheduled by {cron!r}",
            occurred_at=slot,
        )
        await self._start(model, cause, manual=False)

    async def trigger(
        self, model: str, reason: str, idempotency_key: str, ignore_cooldown: bool
    ) -> tuple[pb.Run, bool]:
        """TriggerRetrain: a run started by hand (or the one an earlier call with the same
        key started)."""
        if not model:
            raise InvalidArgument("model is required")
        actor = current_principal().subject
        if ignore_cooldown:
            require_role(Role.ADMIN)
        key = idempotency_key or uuid.uuid4().hex
        cause = Cause(
            pb.TRIGGER_KIND_MANUAL,
            key,
            f"manual:{actor}",
            reason or "started by hand",
            actor=actor,
            occurred_at=self.now(),
        )
        async with self._database.transaction() as session:
            existing = await storage.run_by_trigger(session, model, cause.key)
            if existing is not None:
                return run_message(existing), True
        decision, row = await self._start(
            model, cause, manual=True, ignore_cooldown=ignore_cooldown
        )
        if row is None:
            raise FailedPrecondition(f"no run for {model!r}: {decision.reason}")
        return row, decision.verdict is domain.Verdict.DUPLICATE

    async def _start(
        self, model: str, cause: Cause, *, manual: bool, ignore_cooldown: bool = False
    ) -> tuple[domain.Decision, pb.Run | None]:
        production = await self._registry.alias_version(model, PRODUCTION)
        if production is None:
            decision = domain.Decision(
                domain.Verdict.IGNORED, cause.key, f"{model!r} has no production version"
            )
            log.info("%s starts no run: %s", cause.key, decision.reason)
            return decision, None
        if not production.lineage.training_entrypoint:
            policy, _ = await self.get_policy(model)
            if not policy.executor.entrypoint_override:
                decision = domain.Decision(
                    domain.Verdict.IGNORED,
                    cause.key,
                    f"{model!r} version {production.version} has no training entrypoint in its "
                    "lineage and the policy sets no executor.entrypoint_override",
                )
                log.info("%s starts no run: %s", cause.key, decision.reason)
                return decision, None
        async with self._model_locks[model], self._database.transaction() as session:
            policy, _ = await self._policy(session, model)
            if not manual and not policy.enabled:
                return domain.Decision(
                    domain.Verdict.IGNORED, cause.key, "the retrain policy is disabled"
                ), None
            existing = await storage.run_by_trigger(session, model, cause.key)
            last = await storage.last_run(session, model)
            since = stored_utc(last.created_at) if last is not None else None
            history = domain.History(
                trigger_keys=frozenset({cause.key}) if existing is not None else frozenset(),
                running=len(await storage.runs_in(session, ACTIVE, model)),
                last_started_at=since,
                new_labeled_samples=await storage.labeled_since(session, model, since),
            )
            decision = domain.decide(
                cause.key,
                guards(policy, manual=manual, ignore_cooldown=ignore_cooldown),
                history,
                self.now(),
            )
            if existing is not None:
                return decision, run_message(existing)
            if not decision.run:
                log.info("%s starts no run for %s: %s", cause.key, model, decision.reason)
                return decision, None
            row = self._new_run(model, cause, policy, production)
            session.add(row)
            self._stage(
                session,
                model,
                events.RetrainRequested(
                    run_id=row.run_id,
                    model=model,
                    trigger=cause.message(),
                    base_version=production.version,
                    occurred_at=timestamp(row.created_at),
                ),
            )
        log.info("run %s of %s queued: %s", row.run_id, model, cause.reason)
        self.on_change()
        return decision, run_message(row)

    def _new_run(
        self,
        model: str,
        cause: Cause,
        policy: pb.RetrainPolicy,
        production: registry_types.ModelVersion,
    ) -> storage.RunRow:
        now = self.now()
        return storage.RunRow(
            run_id=uuid.uuid4().hex,
            row_version=1,
            model=model,
            state=RunState.QUEUED,
            trigger_key=cause.key,
            trigger=to_json(cause.message()),
            base_version=production.version,
            policy=to_json(policy),
            executor=policy.executor.kind or self._default_executor,
            executor_job_id="",
            attempt=0,
            candidate_version=0,
            error="",
            holdout_path="",
            gated_against=0,
            created_at=now,
            updated_at=now,
        )

    # Reading runs

    async def run(self, run_id: str) -> storage.RunRow:
        async with self._database.transaction() as session:
            row = await session.get(storage.RunRow, run_id)
            if row is None:
                raise NotFound(f"no retrain run {run_id!r}")
            return row

    async def get_run(self, run_id: str) -> pb.Run:
        return run_message(await self.run(run_id))

    async def list_runs(
        self, model: str, states: Iterable[int], page_size: int, page_token: str
    ) -> tuple[list[pb.Run], str]:
        if page_size < 0:
            raise InvalidArgument("page_size cannot be negative")
        size = min(page_size or 50, MAX_PAGE_SIZE)
        offset = _offset(page_token)
        query = select(storage.RunRow)
        if model:
            query = query.where(storage.RunRow.model == model)
        wanted = list(states)
        if wanted:
            query = query.where(storage.RunRow.state.in_(wanted))
        query = query.order_by(storage.RunRow.created_at.desc(), storage.RunRow.run_id)
        async with self._database.transaction() as session:
            rows = list((await session.execute(query.offset(offset).limit(size + 1))).scalars())
        token = _token(offset + size) if len(rows) > size else ""
        return [run_message(row) for row in rows[:size]], token

    async def runs_to_execute(self) -> tuple[list[str], list[str]]:
        """(queued runs oldest first, runs in progress: interrupted by a restart or an
        error, or running now)."""
        async with self._database.transaction() as session:
            queued = await storage.runs_in(session, [RunState.QUEUED])
            interrupted = await storage.runs_in(session, IN_PROGRESS)
        return [r.run_id for r in queued], [r.run_id for r in interrupted]

    # Changing runs

    async def change(
        self,
        run_id: str,
        expected: Iterable[RunState],
        apply: Callable[[storage.RunRow], list[Message]],
    ) -> storage.RunRow:
        """Apply a change to a run in one of the expected states, with its events. The
        change must follow the run's state machine (`domain.NEXT_STATES`). A concurrent
        change (CancelRun beside the pipeline, say) makes this one re-read the run and
        check its state again rather than overwrite it."""
        allowed = set(expected)
        for _ in range(_CHANGE_ATTEMPTS):
            try:
                async with self._database.transaction() as session:
                    row = await session.get(storage.RunRow, run_id, with_for_update=True)
                    if row is None:
                        raise NotFound(f"no retrain run {run_id!r}")
                    if row.state not in allowed:
                        raise StaleRun(f"run {run_id} is {row.state.name}")
                    before = row.state
                    for message in apply(row):
                        self._stage(session, row.model, message)
                    check_transition(run_id, before, row.state)
                    row.updated_at = self.now()
                    ended = row.state in TERMINAL and row.finished_at is None
                    if ended:
                        row.finished_at = row.updated_at
            except StaleDataError:
                continue
            if ended:
                _runs_ended.add(1, {"model": row.model, "outcome": row.state.label})
            self.on_change()
            return row
        raise Aborted(f"run {run_id} kept changing under this request; retry it")

    async def cancel(self, run_id: str, reason: str) -> pb.Run:
        actor = current_principal().subject
        current = await self.run(run_id)
        if current.state in TERMINAL:
            raise FailedPrecondition(
                f"run {run_id} is already {current.state.name}; only unfinished runs can be "
                "cancelled"
            )

        def cancelled(row: storage.RunRow) -> list[Message]:
            row.state = RunState.CANCELLED
            row.error = f"cancelled by {actor}" + (f": {reason}" if reason else "")
            return [
                events.RetrainFailed(
                    run_id=row.run_id,
                    model=row.model,
                    stage=events.FAILURE_STAGE_CANCELLED,
                    error=row.error,
                    attempt=max(row.attempt, 1),
                    will_retry=False,
                    occurred_at=timestamp(self.now()),
                )
            ]

        try:
            async with self.model_lock(current.model):
                row = await self.change(run_id, ACTIVE, cancelled)
        except StaleRun as error:
            raise FailedPrecondition(f"{error}; only unfinished runs can be cancelled") from None
        self.on_cancel(run_id)
        return run_message(row)

    async def approve(self, run_id: str, comment: str) -> pb.Run:
        actor = current_principal().subject
        # Under the model's lock, re-checked: a CancelRun or RejectCandidate cannot commit
        # between the promotion and the run's record of it.
        async with self.model_lock((await self.run(run_id)).model):
            row = await self._awaiting(run_id)
            await self._registry.set_alias(
                row.model,
                PRODUCTION,
                row.candidate_version,
                f"retrain run {run_id}: approved by {actor}" + (f": {comment}" if comment else ""),
            )
            return run_message(await self._decide(run_id, True, actor, comment))

    async def reject(self, run_id: str, reason: str) -> pb.Run:
        async with self.model_lock((await self.run(run_id)).model):
            await self._awaiting(run_id)
            return run_message(
                await self._decide(run_id, False, current_principal().subject, reason)
            )

    async def _awaiting(self, run_id: str) -> storage.RunRow:
        row = await self.run(run_id)
        if row.state != RunState.AWAITING_APPROVAL:
            raise FailedPrecondition(f"run {run_id} is {row.state.name}, not AWAITING_APPROVAL")
        return row

    async def _decide(
        self, run_id: str, approved: bool, actor: str, comment: str
    ) -> storage.RunRow:
        now = self.now()

        def decided(row: storage.RunRow) -> list[Message]:
            row.state = RunState.PROMOTED if approved else RunState.REJECTED
            if not approved:
                row.error = f"rejected by {actor}" + (f": {comment}" if comment else "")
            approval = pb.Approval(
                approved=approved, actor=actor, comment=comment, decided_at=timestamp(now)
            )
            row.approval = to_json(approval)
            outcome = (
                events.CANDIDATE_OUTCOME_PROMOTED
                if approved
                else events.CANDIDATE_OUTCOME_REJECTED_BY_REVIEWER
            )
            return [candidate_gated(row, outcome, actor, now, comment)]

        try:
            return await self.change(run_id, [RunState.AWAITING_APPROVAL], decided)
        except StaleRun as error:
            raise FailedPrecondition(f"{error}, not AWAITING_APPROVAL") from None

    def _stage(self, session: AsyncSession, model: str, message: Message) -> None:
        self._outbox.stage(session, RETRAIN_EVENTS, message, subject=model)


def candidate_gated(
    row: storage.RunRow,
    outcome: events.CandidateOutcome.ValueType,
    actor: str,
    at: datetime,
    comment: str = "",
) -> events.CandidateGated:
    """The event of a decision on a run's candidate, by the gate or by a reviewer."""
    return events.CandidateGated(
        run_id=row.run_id,
        model=row.model,
        candidate_version=row.candidate_version,
        production_version=row.gated_against,
        gate=from_json(row.gate, pb.GateResult()),
        outcome=outcome,
        actor=actor,
        comment=comment,
        occurred_at=timestamp(at),
    )


def _offset(token: str) -> int:
    if not token:
        return 0
    try:
        return int(base64.urlsafe_b64decode(token.encode()).decode())
    except ValueError:
        raise InvalidArgument("page_token is not a token this server returned") from None


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode()
