"""Starting runs: on a drift alert, on a metric decaying, on a version trained since a change
being due for its follow-up, on a schedule slot, or by hand.

A run is unique per model and trigger, so a redelivered alert, a burst of alerts or a
restart never starts a second run for one cause: it finds the run it started.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime

from flywheel_common.auth import require_role
from flywheel_common.errors import FailedPrecondition, InvalidArgument
from flywheel_common.settings import Role
from flywheel_retrain.domain import (
    ACTIVE,
    GATE_METRIC_OF,
    Alert,
    Decision,
    History,
    Policy,
    Run,
    StoredWindow,
    Trigger,
    Verdict,
    alert_matches,
    decayed_window,
    decide,
    follow_up_due,
    follow_up_key,
)
from flywheel_retrain.handlers.ports import Deps, UnitOfWork, VersionInfo, actor, policy_of

log = logging.getLogger(__name__)


async def on_alert(deps: Deps, alert: Alert, occurred_at: datetime | None) -> None:
    """A drift alert: a run when the policy says it warrants one and the guards agree."""
    async with deps.unit_of_work() as uow:
        policy = await policy_of(uow, alert.model)
    why_not = alert_matches(policy.alert_rule(), alert)
    if why_not is not None:
        log.info("alert %s of %s starts no run: %s", alert.alert_id, alert.model, why_not)
        return
    trigger = Trigger.drift_alert(alert, occurred_at)
    await start(deps, alert.model, trigger, manual=False, concerns=alert.version)


async def on_window(deps: Deps, window: StoredWindow, consumer: str, event_id: str) -> None:
    """Keep a metric window once (labels count toward the guards, values toward decay),
    then evaluate decay and the follow-up on every delivery: a run that could not start
    (the registry was down, the process died) starts on redelivery, and finds its run when
    it had."""
    async with deps.unit_of_work() as uow:
        if await uow.claim(consumer, event_id):
            await uow.windows.add(window)
    decay = await decay_trigger(deps, window.model, window.version)
    if decay is not None:
        await start(deps, window.model, decay, manual=False)
        return
    follow_up = await follow_up_trigger(deps, window.model, window.version)
    if follow_up is not None:
        await start(deps, window.model, follow_up, manual=False, concerns=window.version)


async def decay_trigger(deps: Deps, model: str, version: int) -> Trigger | None:
    """The decay the stored windows of a version complete since the model's last run."""
    async with deps.unit_of_work() as uow:
        policy = await policy_of(uow, model)
        gate_score = await _gate_score(uow, policy, model, version)
        if not policy.decay_rule(gate_score).enabled:
            return None
        last = await uow.runs.last(model)
        since = last.created_at if last is not None else None
        windows = await uow.windows.of_version(model, version, since)
    fired = decayed_window(policy, windows, gate_score)
    return None if fired is None else Trigger.metric_decay(policy, fired, gate_score)


async def follow_up_trigger(deps: Deps, model: str, version: int) -> Trigger | None:
    """The follow-up of the run that promoted `version`, when that run trained on the rows
    since a change and enough have come since for the policy; None once it has started."""
    async with deps.unit_of_work() as uow:
        policy = await policy_of(uow, model)
        rule = policy.follow_up_rule()
        if not rule.enabled:
            return None
        promoter = await uow.runs.promoter_of(model, version)
        if promoter is None or not promoter.learnt_since_change:
            return None
        change = promoter.trigger
        if await uow.runs.by_trigger(model, follow_up_key(promoter.run_id)) is not None:
            return None
        labeled = await uow.windows.labeled_since(model, change.change_began_at)
    if not follow_up_due(rule, promoter.learnt_since_change, labeled):
        return None
    return Trigger.follow_up(
        promoter.run_id, version, promoter.learnt_since_change, labeled, change, deps.clock()
    )


async def _gate_score(uow: UnitOfWork, policy: Policy, model: str, version: int) -> float | None:
    """What the gate measured for `version` before a run promoted it, in the decay's
    metric; None when the policy does not measure decay from the gate or no such run."""
    trigger = policy.decay_trigger
    if not trigger.relative_to_gate:
        return None
    promoter = await uow.runs.promoter_of(model, version)
    report = promoter.gate if promoter is not None else None
    if report is None or report.metric != GATE_METRIC_OF.get(trigger.metric):
        return None
    return report.candidate_value


async def on_schedule(deps: Deps, model: str, slot: datetime, cron: str) -> None:
    await start(deps, model, Trigger.schedule(cron, slot), manual=False)


async def trigger_run(
    deps: Deps, model: str, reason: str, idempotency_key: str, ignore_cooldown: bool
) -> tuple[Run, bool]:
    """TriggerRetrain: a run started by hand, or the one an earlier call with the same key
    started (then `True`, replayed)."""
    if not model:
        raise InvalidArgument("model is required")
    who = actor()
    if ignore_cooldown:
        require_role(Role.ADMIN, model)
    trigger = Trigger.manual(idempotency_key or uuid.uuid4().hex, who, reason, deps.clock())
    async with deps.unit_of_work() as uow:
        existing = await uow.runs.by_trigger(model, trigger.key)
    if existing is not None:
        return existing, True
    decision, run = await start(deps, model, trigger, manual=True, ignore_cooldown=ignore_cooldown)
    if run is None:
        raise FailedPrecondition(f"no run for {model!r}: {decision.reason}")
    return run, decision.verdict is Verdict.DUPLICATE


async def start(
    deps: Deps,
    model: str,
    trigger: Trigger,
    *,
    manual: bool,
    ignore_cooldown: bool = False,
    concerns: int | None = None,
) -> tuple[Decision, Run | None]:
    """Queue a run for `trigger` when the model can be retrained and the guards agree;
    the run this trigger already started, if any. A trigger that `concerns` a version no
    longer in production starts nothing."""
    production = await deps.registry.production(model)
    why_not = await _not_retrainable(deps, model, production)
    if why_not is None and production is not None and concerns not in (None, production.version):
        # An older version's alert, late (its detector was still scoring its last labels)
        # or from a canary: the production version's own detector judges it.
        why_not = f"it concerns version {concerns}, production is {production.version}"
    if why_not is not None or production is None:
        reason = why_not or f"{model!r} has no production version"
        log.info("%s starts no run: %s", trigger.key, reason)
        return Decision(Verdict.IGNORED, trigger.key, reason), None
    async with deps.locks(model), deps.unit_of_work() as uow:
        policy = await policy_of(uow, model)
        if not manual and not policy.enabled:
            return Decision(Verdict.IGNORED, trigger.key, "the retrain policy is disabled"), None
        existing = await uow.runs.by_trigger(model, trigger.key)
        last = await uow.runs.last(model)
        since = last.created_at if last is not None else None
        history = History(
            trigger_keys=frozenset({trigger.key}) if existing is not None else frozenset(),
            running=await uow.runs.count_in(ACTIVE, model),
            last_started_at=since,
            new_labeled_samples=await uow.windows.labeled_since(model, since),
        )
        now = deps.clock()
        guards = policy.guards(manual=manual, ignore_cooldown=ignore_cooldown)
        decision = decide(trigger.key, guards, history, now)
        if existing is not None:
            return decision, existing
        if not decision.run:
            log.info("%s starts no run for %s: %s", trigger.key, model, decision.reason)
            return decision, None
        executor = policy.executor.kind or deps.default_executor
        run = Run.request(
            uuid.uuid4().hex, model, trigger, production.version, policy, executor, now
        )
        uow.runs.save(run)
    log.info("run %s of %s queued: %s (%s)", run.run_id, model, trigger.reason, decision.reason)
    deps.wakeup()
    return decision, run


async def _not_retrainable(deps: Deps, model: str, production: VersionInfo | None) -> str | None:
    """Why no run of `model` can start at all, or None."""
    if production is None:
        return f"{model!r} has no production version"
    if production.training_entrypoint:
        return None
    async with deps.unit_of_work() as uow:
        policy = await policy_of(uow, model)
    if policy.executor.entrypoint_override:
        return None
    return (
        f"{model!r} version {production.version} has no training entrypoint in its lineage "
        "and the policy sets no executor.entrypoint_override"
    )
