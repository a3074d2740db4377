"""The Run aggregate: one retrain run's transitions, each checked against the state
machine and recording the event it causes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from flywheel_common.errors import FailedPrecondition
from flywheel_retrain.domain.events import (
    CandidateGated,
    CandidateOutcome,
    FailureStage,
    RetrainFailed,
    RetrainRequested,
    RetrainStarted,
    RetrainSucceeded,
    RunEvent,
)
from flywheel_retrain.domain.gate import GateReport
from flywheel_retrain.domain.policy import ExecutorKind, Policy
from flywheel_retrain.domain.states import (
    ACTIVE,
    IN_PROGRESS,
    TERMINAL,
    RunState,
    StaleRun,
    check_transition,
)
from flywheel_retrain.domain.values import SYSTEM_ACTOR, Approval, Dataset, Trigger, TriggerKind


@dataclass(frozen=True)
class Run:
    """One retrain run: from its trigger through data, training and the gate to a decision.

    Transitions return the run after the change with the event it caused appended to
    `events`; a change the state machine does not have raises IllegalTransition, a request
    the run's state forbids raises FailedPrecondition.
    """

    run_id: str
    model: str
    state: RunState
    trigger: Trigger
    base_version: int
    policy: Policy
    """The policy in effect when the run was created."""
    executor: ExecutorKind
    created_at: datetime
    updated_at: datetime
    executor_job_id: str = ""
    attempt: int = 0
    dataset: Dataset | None = None
    holdout_path: str = ""
    candidate_version: int = 0
    gate: GateReport | None = None
    gated_against: int = 0
    """The production version the gate compared the candidate with."""
    approval: Approval | None = None
    error: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    events: tuple[RunEvent, ...] = field(default=(), compare=False, repr=False)
    """What the transitions since the run was loaded caused, oldest first."""

    @classmethod
    def request(
        cls,
        run_id: str,
        model: str,
        trigger: Trigger,
        base_version: int,
        policy: Policy,
        executor: ExecutorKind,
        now: datetime,
    ) -> Run:
        """A new run, queued."""
        return cls(
            run_id=run_id,
            model=model,
            state=RunState.QUEUED,
            trigger=trigger,
            base_version=base_version,
            policy=policy,
            executor=executor,
            created_at=now,
            updated_at=now,
            events=(RetrainRequested(run_id, model, trigger, base_version, now),),
        )

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    @property
    def trains_since_change(self) -> bool:
        """A concept-drift run that learns only the new concept: from the rows since the
        change its alert found, without the production version's dataset."""
        return self.policy.training_data.since_change and self.trigger.change_began_at is not None

    @property
    def learnt_since_change(self) -> int:
        """The rows since its change the run trained on (0 for a run that trains on more)."""
        if not self.trains_since_change or self.dataset is None:
            return 0
        return self.dataset.logged_row_count

    @property
    def queued_follow_up(self) -> bool:
        return self.state is RunState.QUEUED and self.trigger.kind is TriggerKind.FOLLOW_UP

    def follows_up_a_replaced_version(self, production_version: int | None) -> str | None:
        """Why a queued follow-up has nothing left to do, or None: the version it would
        retrain no longer serves (a run for a newer change replaced it while it waited)."""
        if not self.queued_follow_up or production_version == self.base_version:
            return None
        return (
            f"version {self.base_version}, which it follows up, no longer serves "
            f"(production is {production_version or 'none'})"
        )

    def rows_to_wait_for(self, now: datetime) -> int:
        """Logged rows the run waits for before it trains (0: it trains on what there is):
        a run trained since a change waits for enough of the new concept, up to the
        policy's limit."""
        if not self.trains_since_change or now - self.created_at >= self.policy.max_wait:
            return 0
        return self.policy.training_data.min_rows_since_change

    def data_since(self, until: datetime) -> datetime:
        """Where the logged rows the run learns from begin."""
        start = until - self.policy.training_window
        began = self.trigger.change_began_at
        return max(start, began) if self.trains_since_change and began is not None else start

    def _move(
        self, state: RunState, now: datetime, event: RunEvent | None = None, **changes: Any
    ) -> Run:
        check_transition(self.run_id, self.state, state)
        ended = state in TERMINAL and self.finished_at is None
        events = self.events if event is None else (*self.events, event)
        return replace(
            self,
            state=state,
            updated_at=now,
            finished_at=now if ended else self.finished_at,
            events=events,
            **changes,
        )

    def expect(self, *states: RunState) -> None:
        """StaleRun unless the run is in one of `states`: it moved on under this change."""
        if self.state not in states:
            raise StaleRun(f"run {self.run_id} is {self.state.name}")

    # The engine's steps

    def prepare_data(self, now: datetime) -> Run:
        return self._move(RunState.PREPARING_DATA, now)

    def data_ready(self, dataset: Dataset, holdout_path: str, now: datetime) -> Run:
        """The dataset and holdout are written: training begins with attempt 1 (counted
        in this same change, so a crash at any later point counts it)."""
        return self._move(
            RunState.TRAINING,
            now,
            dataset=dataset,
            holdout_path=holdout_path,
            attempt=1,
            executor_job_id="",
        )

    def data_prepared_again(self, dataset: Dataset, holdout_path: str, now: datetime) -> Run:
        """The dataset and holdout written again where the run resumed, in the state it
        is in (the replica that prepared them first is gone, and its files with it)."""
        return self._move(self.state, now, dataset=dataset, holdout_path=holdout_path)

    def resume_training(self, now: datetime) -> Run:
        """An interrupted attempt may have started: the resumption is the next one."""
        return self._move(RunState.TRAINING, now, attempt=self.attempt + 1, executor_job_id="")

    def job_started(self, handle: str, attempt: int, now: datetime) -> Run:
        return self._move(
            RunState.TRAINING,
            now,
            RetrainStarted(
                self.run_id, self.model, self.dataset, self.executor, handle, attempt, now
            ),
            executor_job_id=handle,
            started_at=self.started_at or now,
        )

    @property
    def attempts_allowed(self) -> int:
        return self.policy.executor.max_retries + 1

    def trained(self, candidate: int, attempt: int, seconds: float, now: datetime) -> Run:
        return self._move(
            RunState.GATING,
            now,
            RetrainSucceeded(
                self.run_id, self.model, candidate, self.dataset, attempt, seconds, now
            ),
            candidate_version=candidate,
        )

    def attempt_failed(
        self,
        stage: FailureStage,
        error: str,
        attempt: int,
        log_tail: tuple[str, ...],
        now: datetime,
    ) -> Run:
        """Attempt `attempt` failed: the next one begins, or the run fails when none is
        left."""
        retry = attempt < self.attempts_allowed
        event = RetrainFailed(self.run_id, self.model, stage, error, attempt, retry, log_tail, now)
        if retry:
            return self._move(
                RunState.TRAINING, now, event, attempt=attempt + 1, executor_job_id=""
            )
        return self._move(RunState.FAILED, now, event, error=error)

    def fail(
        self, stage: FailureStage, error: str, log_tail: tuple[str, ...], now: datetime
    ) -> Run:
        """The run cannot go on: it ends FAILED, naming the stage."""
        self.expect(RunState.QUEUED, *IN_PROGRESS)
        attempt = max(self.attempt, 1)
        event = RetrainFailed(self.run_id, self.model, stage, error, attempt, False, log_tail, now)
        return self._move(RunState.FAILED, now, event, error=error)

    def record_gate(self, report: GateReport, production_version: int, now: datetime) -> Run:
        """Evaluated once: a run resumed after a crash acts on the recorded decision."""
        return self._move(RunState.GATING, now, gate=report, gated_against=production_version)

    @property
    def gate_decision(self) -> tuple[RunState, CandidateOutcome]:
        """Where the recorded gate verdict takes the run under its policy."""
        if self.gate is None or not self.gate.passed:
            return RunState.REJECTED, CandidateOutcome.REJECTED_BY_GATE
        if self.policy.sign_off:
            return RunState.AWAITING_APPROVAL, CandidateOutcome.AWAITING_APPROVAL
        return RunState.PROMOTED, CandidateOutcome.PROMOTED

    def gated(self, now: datetime) -> Run:
        """Act on the gate: promoted (the caller has moved `production`), awaiting
        sign-off, or rejected."""
        state, outcome = self.gate_decision
        summary = self.gate.summary if self.gate is not None else ""
        error = f"rejected by the gate: {summary}" if state is RunState.REJECTED else self.error
        return self._move(
            state, now, self._candidate_gated(outcome, SYSTEM_ACTOR, now), error=error
        )

    # People's decisions

    def cancel(self, actor: str, reason: str, now: datetime) -> Run:
        if not self.active:
            raise FailedPrecondition(
                f"run {self.run_id} is already {self.state.name}; only unfinished runs can "
                "be cancelled"
            )
        error = f"cancelled by {actor}" + (f": {reason}" if reason else "")
        event = RetrainFailed(
            self.run_id,
            self.model,
            FailureStage.CANCELLED,
            error,
            max(self.attempt, 1),
            False,
            (),
            now,
        )
        return self._move(RunState.CANCELLED, now, event, error=error)

    def require_awaiting_approval(self) -> None:
        if self.state is not RunState.AWAITING_APPROVAL:
            raise FailedPrecondition(
                f"run {self.run_id} is {self.state.name}, not AWAITING_APPROVAL"
            )

    def approve(self, actor: str, comment: str, now: datetime) -> Run:
        """The reviewer signed off (the caller has moved `production`)."""
        self.require_awaiting_approval()
        approval = Approval(True, actor, comment, now)
        event = self._candidate_gated(CandidateOutcome.PROMOTED, actor, now, comment)
        return self._move(RunState.PROMOTED, now, event, approval=approval)

    def reject(self, actor: str, reason: str, now: datetime) -> Run:
        self.require_awaiting_approval()
        approval = Approval(False, actor, reason, now)
        event = self._candidate_gated(CandidateOutcome.REJECTED_BY_REVIEWER, actor, now, reason)
        error = f"rejected by {actor}" + (f": {reason}" if reason else "")
        return self._move(RunState.REJECTED, now, event, approval=approval, error=error)

    def _candidate_gated(
        self, outcome: CandidateOutcome, actor: str, now: datetime, comment: str = ""
    ) -> CandidateGated:
        return CandidateGated(
            self.run_id,
            self.model,
            self.candidate_version,
            self.gated_against,
            self.gate,
            outcome,
            actor,
            comment,
            now,
        )
