"""The Rollout aggregate: a state machine of phases and steps, the traffic each sends where,
and the events each transition records.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

import numpy as np

from flywheel_common.errors import FailedPrecondition, InvalidArgument
from flywheel_deployer.analysis import Analysis, Decision, Window, analyse, merge
from flywheel_deployer.domain.bandit import (
    MIN_MOVE_PERCENT,
    Evidence,
    best_arm_probabilities,
    weights,
)
from flywheel_deployer.domain.events import (
    RolloutAborted,
    RolloutCompleted,
    RolloutEvent,
    RolloutRolledBack,
    RolloutStarted,
    RolloutStepAdvanced,
    Trigger,
)
from flywheel_deployer.domain.policy import Plan, Policy, Strategy
from flywheel_deployer.domain.routing import Role, Route, Routing
from flywheel_deployer.domain.steps import AnalysisResult, Step

SYSTEM_ACTOR = "flywheel-deployer"
"""The actor of decisions the deployer takes on its own (readiness, analysis)."""


class Phase(StrEnum):
    PENDING = "pending"
    """Waiting for every live gateway to load the versions the first step needs."""
    PROGRESSING = "progressing"
    PAUSED = "paused"
    SUCCEEDED = "succeeded"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"
    SUPERSEDED = "superseded"


ACTIVE_PHASES = frozenset({Phase.PENDING, Phase.PROGRESSING, Phase.PAUSED})


@dataclass(frozen=True)
class Rollout:
    rollout_id: str
    model: str
    version: int
    baseline: int
    """The version serving before the rollout (0: none)."""
    plan: Plan
    phase: Phase
    trigger: Trigger
    started_by: str
    reason: str
    created_at: datetime
    updated_at: datetime
    step_index: int = -1
    """-1 while preparing; then the index into plan.steps (canary, direct)."""
    step_started_at: datetime | None = None
    paused_from: Phase | None = None
    end_reason: str = ""
    superseded_by: str = ""
    finished_at: datetime | None = None
    promoted_version: int = 0
    """For A/B and PromoteNow: the version that took all traffic."""
    policy: Policy | None = None
    """The policy the rollout started with, as reported with it."""
    idempotency_key: str = ""
    steps: tuple[Step, ...] = ()
    last_analysis: AnalysisResult | None = None
    arm_weights: tuple[int, ...] = ()
    """A bandit's arms' weights now, in the order of plan.arms (empty: the plan's)."""
    events: tuple[RolloutEvent, ...] = field(default=(), compare=False, repr=False)
    """What the transitions since the rollout was loaded caused, oldest first."""

    @classmethod
    def start(
        cls,
        rollout_id: str,
        model: str,
        version: int,
        baseline: int,
        policy: Policy,
        *,
        trigger: Trigger,
        actor: str,
        reason: str,
        now: datetime,
        idempotency_key: str = "",
        superseding: str = "",
    ) -> Rollout:
        """A new rollout of `version`, waiting for the gateways to load it."""
        plan = policy.plan(version, baseline)
        if plan.strategy is Strategy.SHADOW and not baseline:
            raise FailedPrecondition(
                f"a shadow rollout needs a version serving {model!r} to mirror; deploy one first"
            )
        started = RolloutStarted(
            rollout_id=rollout_id,
            model=model,
            version=version,
            baseline=baseline,
            strategy=plan.strategy,
            policy=policy,
            trigger=trigger,
            superseded_rollout_id=superseding,
            actor=actor,
            reason=reason,
            occurred_at=now,
        )
        return cls(
            rollout_id=rollout_id,
            model=model,
            version=version,
            baseline=baseline,
            plan=plan,
            phase=Phase.PENDING,
            trigger=trigger,
            started_by=actor,
            reason=reason,
            created_at=now,
            updated_at=now,
            policy=policy,
            idempotency_key=idempotency_key,
            events=(started,),
        )

    @classmethod
    def rollback(
        cls,
        rollout_id: str,
        model: str,
        to_version: int,
        rolled_back: int,
        policy: Policy,
        *,
        actor: str,
        reason: str,
        now: datetime,
        ended: Rollout | None = None,
    ) -> Rollout:
        """All traffic back to `to_version` at once: a rollout that has already succeeded.

        The event names `ended`, the running rollout this one stops, when there is one."""
        event = RolloutRolledBack(
            rollout_id=ended.rollout_id if ended is not None else rollout_id,
            model=model,
            rolled_back_version=rolled_back,
            restored_version=to_version,
            automatic=False,
            analysis=None,
            actor=actor,
            reason=reason,
            occurred_at=now,
        )
        return cls(
            rollout_id=rollout_id,
            model=model,
            version=to_version,
            baseline=rolled_back,
            plan=policy.plan(to_version, rolled_back, Strategy.DIRECT),
            phase=Phase.SUCCEEDED,
            trigger=Trigger.ROLLBACK,
            started_by=actor,
            reason=reason,
            created_at=now,
            updated_at=now,
            end_reason=reason,
            finished_at=now,
            policy=policy,
            events=(event,),
        )

    @property
    def strategy(self) -> Strategy:
        return self.plan.strategy

    @property
    def active(self) -> bool:
        return self.phase in ACTIVE_PHASES

    @property
    def weight(self) -> int:
        """The candidate's share of traffic now."""
        if self.phase is Phase.SUCCEEDED:
            return 100
        if not self.active or self.step_index < 0:
            return 0
        if self.strategy in (Strategy.DIRECT, Strategy.CANARY):
            return self.plan.steps[self.step_index] if self.baseline else 100
        if self.strategy in (Strategy.AB, Strategy.BANDIT):
            return sum(
                weight
                for arm, weight in zip(self.plan.arms, self.current_arm_weights(), strict=True)
                if arm.version == self.version
            )
        return 0

    def current_arm_weights(self) -> tuple[int, ...]:
        return self.arm_weights or tuple(arm.weight for arm in self.plan.arms)

    @property
    def last_step(self) -> bool:
        return self.step_index >= len(self.plan.steps) - 1

    def routing(self) -> Routing:
        """What the gateways should do for this rollout's model right now."""
        sticky = self.plan.sticky_key
        if self.phase is Phase.SUCCEEDED:
            final = self.promoted_version or self.version
            return Routing((Route(final, 100),), sticky)
        if not self.active:
            restored = (Route(self.baseline, 100),) if self.baseline else ()
            return Routing(restored, sticky)
        if self.strategy in (Strategy.AB, Strategy.BANDIT):
            arms = tuple(
                Route(arm.version, weight if self.step_index >= 0 else 0, Role.ARM, arm.name)
                for arm, weight in zip(self.plan.arms, self.current_arm_weights(), strict=True)
            )
            if self.step_index < 0 and self.baseline:
                arms += (Route(self.baseline, 100),)
            return Routing(arms, sticky)
        if self.strategy is Strategy.SHADOW:
            percent = self.plan.shadow_percent if self.step_index >= 0 else 0
            routes: tuple[Route, ...] = (Route(self.baseline, 100),) if self.baseline else ()
            # While preparing the candidate is listed at 0% so that gateways load it.
            if self.step_index < 0:
                routes += (Route(self.version, 0, Role.CANARY),)
            return Routing(routes, sticky, self.version if percent else 0, percent)
        weight = self.weight
        candidate = Route(self.version, weight, Role.CANARY)
        if not self.baseline:
            return Routing((candidate,), sticky)
        return Routing((Route(self.baseline, 100 - weight), candidate), sticky)

    def needed_versions(self) -> set[int]:
        """Versions every live gateway must hold before the next step shifts traffic."""
        if self.strategy in (Strategy.AB, Strategy.BANDIT):
            return {arm.version for arm in self.plan.arms}
        return {self.version}

    def require_active(self, verb: str) -> None:
        if self.phase not in ACTIVE_PHASES:
            raise FailedPrecondition(
                f"rollout {self.rollout_id} has finished ({self.phase}); it cannot be {verb}"
            )

    # Transitions: each returns the rollout after the change, with the events it caused.

    def _record(self, event: RolloutEvent, **changes: Any) -> Rollout:
        return replace(self, events=(*self.events, event), **changes)

    def begin(self, now: datetime) -> Rollout:
        """Gateways hold the versions: the first step takes effect."""
        started = replace(
            self, phase=Phase.PROGRESSING, step_index=0, step_started_at=now, updated_at=now
        )
        return started._open_step(now)._record(
            RolloutStepAdvanced(
                rollout_id=self.rollout_id,
                model=self.model,
                version=self.version,
                baseline=self.baseline,
                from_step_index=-1,
                to_step_index=0,
                from_weight=0,
                to_weight=started.weight,
                analysis=None,
                actor=SYSTEM_ACTOR,
                occurred_at=now,
            )
        )

    def advance(self, now: datetime, analysis: AnalysisResult | None = None) -> Rollout:
        """The next step, after `analysis` passed the current one."""
        if self.last_step:
            raise FailedPrecondition("the rollout is at its last step; promote it instead")
        advanced = replace(
            self._close_step(now, analysis),
            step_index=self.step_index + 1,
            step_started_at=now,
            updated_at=now,
        )
        return advanced._open_step(now)._record(
            RolloutStepAdvanced(
                rollout_id=self.rollout_id,
                model=self.model,
                version=self.version,
                baseline=self.baseline,
                from_step_index=self.step_index,
                to_step_index=advanced.step_index,
                from_weight=self.weight,
                to_weight=advanced.weight,
                analysis=analysis,
                actor=SYSTEM_ACTOR,
                occurred_at=now,
            )
        )

    def finish(
        self, phase: Phase, now: datetime, reason: str, promoted_version: int = 0
    ) -> Rollout:
        """End in `phase`; the named transitions that call it record what it means."""
        return replace(
            self,
            phase=phase,
            end_reason=reason,
            finished_at=now,
            updated_at=now,
            paused_from=None,
            promoted_version=promoted_version,
        )

    def complete(
        self,
        now: datetime,
        reason: str,
        *,
        analysis: AnalysisResult | None = None,
        forced: bool = False,
        actor: str = SYSTEM_ACTOR,
        promoted_version: int = 0,
    ) -> Rollout:
        """The candidate (or `promoted_version`) takes all traffic."""
        ended = self._close_step(now, analysis) if analysis is not None else self
        ended = ended.finish(Phase.SUCCEEDED, now, reason, promoted_version)
        return ended._record(
            RolloutCompleted(
                rollout_id=self.rollout_id,
                model=self.model,
                version=promoted_version or self.version,
                previous_version=self.baseline,
                strategy=self.strategy,
                analysis=analysis,
                forced=forced,
                actor=actor,
                reason=reason,
                duration_seconds=(now - self.created_at).total_seconds(),
                occurred_at=now,
            )
        )

    def roll_back(
        self, now: datetime, reason: str, analysis: AnalysisResult | None = None
    ) -> Rollout:
        """The deployer takes the candidate out of traffic: the baseline serves again."""
        ended = self._close_step(now, analysis) if analysis is not None else self
        ended = ended.finish(Phase.ROLLED_BACK, now, reason)
        return ended._record(
            RolloutRolledBack(
                rollout_id=self.rollout_id,
                model=self.model,
                rolled_back_version=self.version,
                restored_version=self.baseline,
                automatic=True,
                analysis=analysis,
                actor=SYSTEM_ACTOR,
                reason=reason,
                occurred_at=now,
            )
        )

    def abort(self, now: datetime, reason: str, actor: str) -> Rollout:
        self.require_active("aborted")
        ended = self.finish(Phase.ABORTED, now, reason)
        return ended._record(
            RolloutAborted(
                rollout_id=self.rollout_id,
                model=self.model,
                version=self.version,
                restored_version=self.baseline,
                superseded=False,
                superseded_by="",
                actor=actor,
                reason=reason,
                occurred_at=now,
            )
        )

    def supersede(self, by: str, now: datetime, *, version: int = 0, actor: str = "") -> Rollout:
        """Replaced by rollout `by` (of `version`)."""
        ended = replace(
            self.finish(Phase.SUPERSEDED, now, f"superseded by rollout {by}"), superseded_by=by
        )
        return ended._record(
            RolloutAborted(
                rollout_id=self.rollout_id,
                model=self.model,
                version=self.version,
                restored_version=self.baseline,
                superseded=True,
                superseded_by=by,
                actor=actor,
                reason=f"superseded by a rollout of version {version}",
                occurred_at=now,
            )
        )

    def promote_now(self, version: int, now: datetime, reason: str, actor: str) -> Rollout:
        """An operator ends the rollout early: `version` (default the candidate) takes all."""
        self.require_active("promoted")
        target = version or self.version
        allowed = {self.version} | {arm.version for arm in self.plan.arms}
        if target not in allowed:
            raise InvalidArgument(
                f"version {target} is not part of rollout {self.rollout_id}; choose one of "
                + ", ".join(str(v) for v in sorted(allowed))
            )
        return self.complete(
            now,
            reason,
            forced=True,
            actor=actor,
            promoted_version=target if target != self.version else 0,
        )

    def pause(self, now: datetime, reason: str) -> Rollout:
        if self.phase is Phase.PAUSED:
            return self
        if not self.active:
            raise FailedPrecondition(
                f"rollout {self.rollout_id} has finished ({self.phase}); only a running "
                "rollout can be paused"
            )
        return replace(
            self, phase=Phase.PAUSED, paused_from=self.phase, updated_at=now, end_reason=reason
        )

    def resume(self, now: datetime) -> Rollout:
        if self.phase is not Phase.PAUSED:
            raise FailedPrecondition(
                f"rollout {self.rollout_id} is {self.phase}; only a paused rollout can resume"
            )
        # The step's clock restarts: analysis judges only what the resumed step serves.
        return replace(
            self,
            phase=self.paused_from or Phase.PROGRESSING,
            paused_from=None,
            step_started_at=now if self.step_index >= 0 else self.step_started_at,
            updated_at=now,
            end_reason="",
        )

    # The engine's decisions.

    def prepare(self, pending_gateways: list[str], now: datetime) -> Rollout:
        """PENDING: once every live gateway holds what the first step needs, start it; roll
        back if they take longer than the plan allows."""
        if pending_gateways:
            timeout = self.plan.gateway_ready_timeout_seconds
            if (now - self.created_at).total_seconds() < timeout:
                return self
            return self.roll_back(
                now,
                f"gateways {', '.join(pending_gateways)} did not report version "
                f"{self.version} ready within {timeout:.0f}s",
            )
        if self.strategy is Strategy.DIRECT or (
            self.strategy is Strategy.CANARY and not self.baseline
        ):
            return self.complete(now, "every live gateway holds the version")
        return self.begin(now)

    @property
    def judged(self) -> bool:
        """Whether analysis moves this rollout (A/B arms hold until an operator ends them)."""
        return self.phase is Phase.PROGRESSING and self.strategy in (
            Strategy.CANARY,
            Strategy.SHADOW,
        )

    def assess(
        self, candidate: Sequence[Window], baseline: Sequence[Window], now: datetime
    ) -> Analysis:
        """Analyse the current step: the candidate over the step, the baseline over the
        whole rollout (at a 100% step it serves nothing)."""
        step_start = self.step_started_at or self.created_at
        return analyse(
            self.plan.rule,
            self.plan.thresholds,
            merge(candidate),
            merge(baseline),
            (now - step_start).total_seconds(),
            self.last_step,
        )

    def analysed(self, analysis: Analysis, now: datetime) -> AnalysisResult:
        return AnalysisResult(
            decision=analysis.decision,
            checks=analysis.checks,
            candidate_version=self.version,
            baseline_version=self.baseline,
            candidate_requests=analysis.candidate.requests,
            baseline_requests=analysis.baseline.requests,
            window_ids=analysis.candidate.window_ids,
            step_index=self.step_index,
            weight=self.weight,
            summary=analysis.summary,
            analyzed_at=now,
        )

    def judge(self, analysis: Analysis, now: datetime) -> Rollout:
        """PROGRESSING canary or shadow: act on the analysis of the current step."""
        if analysis.decision is Decision.WAIT:
            return self
        result = self.analysed(analysis, now)
        judged = replace(self, last_analysis=result)
        if analysis.decision is Decision.ROLLBACK:
            return judged.roll_back(now, analysis.summary, result)
        if analysis.decision is Decision.PAUSE:
            return judged.pause(now, analysis.summary)
        if self.strategy is Strategy.SHADOW and not self.plan.promote_shadow_on_success:
            return judged  # the candidate passed; an operator promotes it
        if self.strategy is Strategy.SHADOW or analysis.decision is Decision.PROMOTE:
            return judged.complete(now, analysis.summary, analysis=result)
        return judged.advance(now, result)

    def rebalance(self, evidence: Sequence[Evidence], now: datetime) -> Rollout:
        """PROGRESSING bandit: the arms' weights after the evidence of their windows (one
        per arm, in plan order), at most once per rebalance interval. The draws are seeded
        by the rollout and the amount of evidence: the same windows give the same weights."""
        terms = self.plan.bandit
        if self.phase is not Phase.PROGRESSING or terms is None:
            return self
        since = self.step_started_at or self.created_at
        if (now - since).total_seconds() < terms.rebalance_seconds:
            return self
        seen = sum(e.labeled + len(e.latencies_ms) for e in evidence)
        if not seen:
            return self  # no reward observed yet: the even split stands
        rng = np.random.default_rng(zlib.crc32(f"{self.rollout_id}:{seen}".encode()))
        probabilities = best_arm_probabilities(evidence, terms.reward, rng)
        following = weights(probabilities.tolist(), terms.floor_percent)
        moved = max(abs(a - b) for a, b in zip(following, self.current_arm_weights(), strict=True))
        if moved < MIN_MOVE_PERCENT:
            return self
        return replace(self, arm_weights=following, step_started_at=now, updated_at=now)

    def _open_step(self, now: datetime) -> Rollout:
        return replace(self, steps=(*self.steps, Step(self.step_index, self.weight, now)))

    def _close_step(self, now: datetime, analysis: AnalysisResult | None) -> Rollout:
        if not self.steps:
            return self
        last = replace(self.steps[-1], finished_at=now, analysis=analysis)
        return replace(self, steps=(*self.steps[:-1], last))
