"""Retrain runs and the decisions around them: pure, no I/O, no protobuf, no SQL.

A `Run` is one explicit state machine (`NEXT_STATES`): each transition checks its rules and
records the event it causes, and the unit of work stores the run with those events in one
transaction. The policy says which drift alerts, decaying metrics and schedule slots warrant
a run; the guards (one run per trigger, a cooldown, a cap on concurrent runs, enough new
labels) keep a burst of alerts from becoming a burst of runs; the gate compares a candidate
with production on the same holdout.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from flywheel_common.errors import FailedPrecondition, InvalidArgument
from flywheel_retrain.evaluation import METRICS

SYSTEM_ACTOR = "system:retrain"
"""The actor of what the trigger decides on its own (alerts, decay, schedules, the gate)."""
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_HOLDOUT_SIZE = 200
DEFAULT_WINDOW = timedelta(days=7)
MAX_RETRIES = 10


class RunState(IntEnum):
    """Where a retrain run is; the numbers are how rows store it (and, by design, the
    contract's numbers too)."""

    QUEUED = 1
    PREPARING_DATA = 2
    TRAINING = 3
    GATING = 4
    AWAITING_APPROVAL = 5
    PROMOTED = 6
    REJECTED = 7
    FAILED = 8
    CANCELLED = 9

    @property
    def label(self) -> str:
        """The lower-case name people read in logs and metrics: `awaiting_approval`."""
        return self.name.lower()


IN_PROGRESS = frozenset({RunState.PREPARING_DATA, RunState.TRAINING, RunState.GATING})
"""States the run engine works in: a run found in one after a restart is resumed."""
ACTIVE = frozenset({RunState.QUEUED, *IN_PROGRESS, RunState.AWAITING_APPROVAL})
"""Unfinished runs. One awaiting sign-off still holds its slot: a second candidate would
compete with it."""
TERMINAL = frozenset(RunState) - ACTIVE

_ENDINGS = frozenset({RunState.FAILED, RunState.CANCELLED})
NEXT_STATES: dict[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.PREPARING_DATA}) | _ENDINGS,
    # A run stays in a state while its attempts, job handles and gate result are recorded.
    RunState.PREPARING_DATA: frozenset({RunState.PREPARING_DATA, RunState.TRAINING}) | _ENDINGS,
    RunState.TRAINING: frozenset({RunState.TRAINING, RunState.GATING}) | _ENDINGS,
    RunState.GATING: frozenset(
        {RunState.GATING, RunState.AWAITING_APPROVAL, RunState.PROMOTED, RunState.REJECTED}
    )
    | _ENDINGS,
    RunState.AWAITING_APPROVAL: frozenset({RunState.PROMOTED, RunState.REJECTED}) | _ENDINGS,
    **{state: frozenset() for state in TERMINAL},
}
"""The run's state machine: from each state, the states a change may leave it in."""


class IllegalTransition(Exception):
    """A change would move a run along an edge the state machine does not have: a bug."""


class StaleRun(Exception):
    """The run moved on (cancelled, or finished elsewhere) before this change applied."""


def check_transition(run_id: str, before: RunState, after: RunState) -> None:
    if after not in NEXT_STATES[before]:
        raise IllegalTransition(f"run {run_id} cannot go from {before.label} to {after.label}")


class Severity(IntEnum):
    """Drift alert severities, ordered as in the drift contract."""

    NONE = 0
    LOW = 1
    MEDIUM = 2
    HIGH = 3
    CRITICAL = 4


@dataclass(frozen=True)
class AlertRule:
    enabled: bool = True
    min_severity: Severity = Severity.MEDIUM
    min_drifted_features: int = 1
    kinds: frozenset[str] = frozenset()
    """Alert kinds that count (data, prediction, quality, concept); empty means all."""
    on_concept_drift: bool = True


@dataclass(frozen=True)
class DecayRule:
    enabled: bool = False
    higher_is_better: bool = True
    """True for accuracy; False for error rate or mean absolute error."""
    threshold: float = 0.0
    consecutive_windows: int = 1
    min_labeled: int = 1


@dataclass(frozen=True)
class Guards:
    cooldown: timedelta = timedelta(hours=1)
    max_concurrent_runs: int = 1
    min_new_labeled_samples: int = 0


@dataclass(frozen=True)
class Alert:
    alert_id: str
    model: str
    version: int
    severity: Severity
    kinds: frozenset[str]
    drifted_features: int


@dataclass(frozen=True)
class MetricWindow:
    window_id: str
    model: str
    version: int
    value: float | None
    """The decay metric of the window (accuracy, error rate...), None without labels."""
    labeled: int


class Verdict(StrEnum):
    RUN = "run"
    IGNORED = "ignored"
    """The event does not meet the policy."""
    DUPLICATE = "duplicate"
    """A run for this trigger exists already."""
    COOLING_DOWN = "cooling_down"
    BUSY = "busy"
    """As many runs as allowed are in progress."""
    TOO_FEW_LABELS = "too_few_labels"


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    trigger_key: str
    reason: str

    @property
    def run(self) -> bool:
        return self.verdict is Verdict.RUN


def alert_matches(rule: AlertRule, alert: Alert) -> str | None:
    """Why the alert does not warrant a run, or None when it does."""
    if not rule.enabled:
        return "alert triggers are disabled"
    if "concept" in alert.kinds and rule.on_concept_drift:
        return None
    if alert.severity < rule.min_severity:
        return f"severity {alert.severity.name} is below {rule.min_severity.name}"
    if rule.kinds and not (alert.kinds & rule.kinds):
        return f"alert kinds {sorted(alert.kinds)} are not among {sorted(rule.kinds)}"
    if alert.drifted_features < rule.min_drifted_features:
        return (
            f"{alert.drifted_features} drifted feature(s), the policy needs "
            f"{rule.min_drifted_features}"
        )
    return None


@dataclass
class DecayTracker:
    """Consecutive windows of one model version past the decay threshold."""

    rule: DecayRule
    streak: int = 0
    windows: list[str] = field(default_factory=list)

    def observe(self, window: MetricWindow) -> bool:
        """True when this window completes the run of decayed windows the rule asks for."""
        if not self.rule.enabled or window.value is None or window.labeled < self.rule.min_labeled:
            return False
        decayed = (
            window.value < self.rule.threshold
            if self.rule.higher_is_better
            else window.value > self.rule.threshold
        )
        if not decayed:
            self.streak, self.windows = 0, []
            return False
        self.streak += 1
        self.windows.append(window.window_id)
        if self.streak >= self.rule.consecutive_windows:
            self.streak, self.windows = 0, []
            return True
        return False


@dataclass(frozen=True)
class History:
    """What the guards need to know about a model's runs."""

    trigger_keys: frozenset[str] = frozenset()
    """Every trigger that has already started a run (any outcome)."""
    running: int = 0
    last_started_at: datetime | None = None
    new_labeled_samples: int = 0


def decide(trigger_key: str, guards: Guards, history: History, now: datetime) -> Decision:
    """Whether a trigger that met the policy may start a run now."""
    if trigger_key in history.trigger_keys:
        return Decision(Verdict.DUPLICATE, trigger_key, "a run for this trigger exists")
    if history.running >= guards.max_concurrent_runs:
        return Decision(
            Verdict.BUSY,
            trigger_key,
            f"{history.running} run(s) in progress, the policy allows {guards.max_concurrent_runs}",
        )
    if history.last_started_at is not None and now - history.last_started_at < guards.cooldown:
        remaining = guards.cooldown - (now - history.last_started_at)
        return Decision(
            Verdict.COOLING_DOWN,
            trigger_key,
            f"cooling down for another {remaining.total_seconds():.0f}s",
        )
    if history.new_labeled_samples < guards.min_new_labeled_samples:
        return Decision(
            Verdict.TOO_FEW_LABELS,
            trigger_key,
            f"{history.new_labeled_samples} new labeled samples, the policy needs "
            f"{guards.min_new_labeled_samples}",
        )
    return Decision(Verdict.RUN, trigger_key, "the policy's conditions are met")


@dataclass(frozen=True)
class Gate:
    metric: str
    higher_is_better: bool = True
    min_improvement: float = 0.0


@dataclass(frozen=True)
class GateResult:
    passed: bool
    candidate: float
    production: float
    improvement: float
    reason: str


def evaluate_gate(gate: Gate, candidate: float, production: float | None) -> GateResult:
    """The candidate passes when it beats production by at least `min_improvement` on the
    gate's metric (or when there is no production version to beat)."""
    if production is None:
        return GateResult(True, candidate, float("nan"), float("nan"), "no production version")
    improvement = candidate - production if gate.higher_is_better else production - candidate
    passed = improvement >= gate.min_improvement
    relation = ">=" if passed else "<"
    return GateResult(
        passed,
        candidate,
        production,
        improvement,
        f"{gate.metric}: candidate {candidate:.4g} vs production {production:.4g}, "
        f"improvement {improvement:.4g} {relation} required {gate.min_improvement:.4g}",
    )


# Policy


class DecayMetric(StrEnum):
    UNSPECIFIED = "unspecified"
    ACCURACY = "accuracy"
    MEAN_ABSOLUTE_ERROR = "mean_absolute_error"
    ERROR_RATE = "error_rate"


class ApprovalMode(StrEnum):
    UNSPECIFIED = "unspecified"
    """Automatic."""
    AUTOMATIC = "automatic"
    HUMAN_SIGN_OFF = "human_sign_off"


class MetricGoal(StrEnum):
    UNSPECIFIED = "unspecified"
    """The metric's own direction (accuracy up, mean absolute error down)."""
    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


class ExecutorKind(IntEnum):
    """Where a run's training job runs; the numbers are how rows store it."""

    UNSPECIFIED = 0
    """In a policy: the service's default executor."""
    LOCAL = 1
    KUBERNETES = 2


@dataclass(frozen=True)
class AlertTrigger:
    enabled: bool = False
    min_severity: Severity = Severity.NONE
    min_drifted_features: int = 0
    kinds: tuple[str, ...] = ()
    """data, prediction, quality, concept; empty means data and prediction."""
    on_concept_drift: bool = False


@dataclass(frozen=True)
class DecayTrigger:
    enabled: bool = False
    metric: DecayMetric = DecayMetric.UNSPECIFIED
    threshold: float = 0.0
    consecutive_windows: int = 0
    min_labeled_count: int = 0


@dataclass(frozen=True)
class ScheduleTrigger:
    enabled: bool = False
    cron: str = ""
    time_zone: str = ""


@dataclass(frozen=True)
class GateConfig:
    metric: str = ""
    goal: MetricGoal = MetricGoal.UNSPECIFIED
    min_improvement: float = 0.0
    holdout_size: int = 0


@dataclass(frozen=True)
class TrainingData:
    window: timedelta = timedelta(0)
    include_production_dataset: bool = False
    max_rows: int = 0


@dataclass(frozen=True)
class ExecutorConfig:
    kind: ExecutorKind = ExecutorKind.UNSPECIFIED
    timeout: timedelta = timedelta(0)
    max_retries: int = 0
    entrypoint_override: str = ""
    image: str = ""
    env: Mapping[str, str] = field(default_factory=dict)


def command_line(command: str) -> list[str]:
    """The argv of a training command; ValueError for an empty or unparsable one."""
    try:
        argv = shlex.split(command)
    except ValueError as error:
        raise ValueError(f"the training entrypoint {command!r} cannot be parsed: {error}") from None
    if not argv:
        raise ValueError("the training entrypoint is empty")
    return argv


@dataclass(frozen=True)
class Policy:
    """A model's retrain policy: which causes start runs, the guards, the gate, the data,
    the executor. Versioned per model (compare-and-set on `revision`)."""

    model: str
    enabled: bool = False
    alert_trigger: AlertTrigger = AlertTrigger()
    decay_trigger: DecayTrigger = DecayTrigger()
    schedule_trigger: ScheduleTrigger = ScheduleTrigger()
    cooldown: timedelta = timedelta(0)
    min_new_labeled_samples: int = 0
    max_concurrent_runs: int = 0
    approval_mode: ApprovalMode = ApprovalMode.UNSPECIFIED
    gate: GateConfig = GateConfig()
    training_data: TrainingData = TrainingData()
    executor: ExecutorConfig = ExecutorConfig()
    revision: int = 0
    updated_by: str = ""
    updated_at: datetime | None = None

    @classmethod
    def default(cls, model: str) -> Policy:
        """What a model gets until someone sets a policy: alerts of MEDIUM severity or more
        and concept drift retrain, at most once an hour, promoted automatically when the
        candidate is at least as accurate as production on the newest 200 labeled
        predictions."""
        return cls(
            model=model,
            enabled=True,
            alert_trigger=AlertTrigger(
                enabled=True,
                min_severity=Severity.MEDIUM,
                min_drifted_features=1,
                on_concept_drift=True,
            ),
            cooldown=timedelta(hours=1),
            max_concurrent_runs=1,
            approval_mode=ApprovalMode.AUTOMATIC,
            gate=GateConfig(
                metric="accuracy", goal=MetricGoal.MAXIMIZE, holdout_size=DEFAULT_HOLDOUT_SIZE
            ),
            training_data=TrainingData(window=DEFAULT_WINDOW, include_production_dataset=True),
            executor=ExecutorConfig(max_retries=1),
        )

    def validate(self) -> None:
        """INVALID_ARGUMENT naming the first field to fix."""
        if not MODEL_NAME.match(self.model):
            raise InvalidArgument(f"policy.model {self.model!r} must match {MODEL_NAME.pattern}")
        if self.alert_trigger.min_drifted_features < 0:
            raise InvalidArgument("alert_trigger.min_drifted_features cannot be negative")
        decay = self.decay_trigger
        if decay.enabled:
            if decay.metric is DecayMetric.UNSPECIFIED:
                raise InvalidArgument(
                    "decay_trigger.metric is required when decay is enabled: ACCURACY, "
                    "MEAN_ABSOLUTE_ERROR or ERROR_RATE"
                )
            if not math.isfinite(decay.threshold):
                raise InvalidArgument("decay_trigger.threshold must be a finite number")
        if decay.consecutive_windows < 0 or decay.min_labeled_count < 0:
            raise InvalidArgument("decay_trigger counts cannot be negative")
        self._validate_schedule()
        if self.cooldown < timedelta(0):
            raise InvalidArgument("cooldown cannot be negative")
        if self.min_new_labeled_samples < 0 or self.max_concurrent_runs < 0:
            raise InvalidArgument(
                "min_new_labeled_samples and max_concurrent_runs cannot be negative"
            )
        gate = self.gate
        if gate.metric and gate.metric not in METRICS:
            raise InvalidArgument(f"gate.metric {gate.metric!r} is not one of {sorted(METRICS)}")
        if not math.isfinite(gate.min_improvement):
            raise InvalidArgument("gate.min_improvement must be a finite number")
        if gate.holdout_size < 0:
            raise InvalidArgument("gate.holdout_size cannot be negative")
        data = self.training_data
        if data.window < timedelta(0) or data.max_rows < 0:
            raise InvalidArgument(
                "training_data.window and training_data.max_rows cannot be negative"
            )
        self._validate_executor()

    def _validate_schedule(self) -> None:
        schedule = self.schedule_trigger
        if schedule.enabled and not croniter.is_valid(schedule.cron):
            raise InvalidArgument(
                f"schedule_trigger.cron {schedule.cron!r} is not a five-field cron expression "
                "such as '0 3 * * 1'"
            )
        if schedule.time_zone:
            try:
                ZoneInfo(schedule.time_zone)
            except (ZoneInfoNotFoundError, ValueError):
                raise InvalidArgument(
                    f"schedule_trigger.time_zone {schedule.time_zone!r} is not an IANA time zone"
                ) from None

    def _validate_executor(self) -> None:
        executor = self.executor
        if executor.timeout < timedelta(0):
            raise InvalidArgument("executor.timeout cannot be negative")
        if not 0 <= executor.max_retries <= MAX_RETRIES:
            raise InvalidArgument(f"executor.max_retries must be between 0 and {MAX_RETRIES}")
        if executor.entrypoint_override:
            try:
                command_line(executor.entrypoint_override)
            except ValueError as error:
                raise InvalidArgument(f"executor.entrypoint_override: {error}") from None
        for name in executor.env:
            if not _ENV_NAME.match(name):
                raise InvalidArgument(f"executor.env name {name!r} is not a valid variable name")

    @property
    def scheduled(self) -> bool:
        return self.enabled and self.schedule_trigger.enabled

    @property
    def sign_off(self) -> bool:
        return self.approval_mode is ApprovalMode.HUMAN_SIGN_OFF

    @property
    def holdout_size(self) -> int:
        return self.gate.holdout_size or DEFAULT_HOLDOUT_SIZE

    @property
    def training_window(self) -> timedelta:
        return self.training_data.window or DEFAULT_WINDOW

    def alert_rule(self) -> AlertRule:
        trigger = self.alert_trigger
        return AlertRule(
            enabled=self.enabled and trigger.enabled,
            min_severity=max(trigger.min_severity, Severity.LOW),
            min_drifted_features=trigger.min_drifted_features,
            kinds=frozenset(trigger.kinds or ("data", "prediction")),
            on_concept_drift=trigger.on_concept_drift,
        )

    def decay_rule(self) -> DecayRule:
        trigger = self.decay_trigger
        return DecayRule(
            enabled=self.enabled and trigger.enabled,
            higher_is_better=trigger.metric is DecayMetric.ACCURACY,
            threshold=trigger.threshold,
            consecutive_windows=max(trigger.consecutive_windows, 1),
            min_labeled=trigger.min_labeled_count,
        )

    def guards(self, *, manual: bool, ignore_cooldown: bool) -> Guards:
        return Guards(
            cooldown=timedelta(0) if ignore_cooldown else self.cooldown,
            max_concurrent_runs=max(self.max_concurrent_runs, 1),
            # New labels gate automatic runs; a person asking for a run has their reasons.
            min_new_labeled_samples=0 if manual else self.min_new_labeled_samples,
        )

    def gate_rule(self) -> Gate:
        name = self.gate.metric or "accuracy"
        goal = self.gate.goal
        higher = (
            METRICS[name].higher_is_better
            if goal is MetricGoal.UNSPECIFIED
            else goal is MetricGoal.MAXIMIZE
        )
        return Gate(name, higher, self.gate.min_improvement)


@dataclass(frozen=True)
class StoredWindow:
    """A metric window as the trigger keeps it: labels for the guards, values for decay."""

    model: str
    version: int
    window_id: str
    window_end: datetime
    labeled: int
    accuracy: float | None = None
    mean_absolute_error: float | None = None
    error_rate: float | None = None

    def value(self, metric: DecayMetric) -> float | None:
        """The decay metric of the window, None when the window cannot tell."""
        if metric is DecayMetric.ACCURACY:
            return self.accuracy
        if metric is DecayMetric.MEAN_ABSOLUTE_ERROR:
            return self.mean_absolute_error
        return self.error_rate


def decayed_window(policy: Policy, windows: list[StoredWindow]) -> StoredWindow | None:
    """The window (oldest first) that completes the decay the policy asks for, if the last
    one does: a repeated evaluation names the same window, so it finds the run it started."""
    rule = policy.decay_rule()
    if not rule.enabled:
        return None
    tracker = DecayTracker(rule)
    fired = None
    for window in windows:
        observed = MetricWindow(
            window.window_id,
            window.model,
            window.version,
            window.value(policy.decay_trigger.metric),
            window.labeled,
        )
        fired = window if tracker.observe(observed) else None
    return fired


# Runs


class TriggerKind(IntEnum):
    """What started a run; the name is part of the run's trigger key."""

    DRIFT_ALERT = 1
    METRIC_DECAY = 2
    SCHEDULE = 3
    MANUAL = 4


@dataclass(frozen=True)
class Trigger:
    """A cause that met the policy, before the guards have spoken; the run keeps it."""

    kind: TriggerKind
    source_id: str
    triggered_by: str
    reason: str
    actor: str = SYSTEM_ACTOR
    occurred_at: datetime | None = None

    @property
    def key(self) -> str:
        """One run per model and key: the same alert, window or slot never runs twice."""
        return f"TRIGGER_KIND_{self.kind.name}:{self.source_id}"

    @classmethod
    def drift_alert(cls, alert: Alert, occurred_at: datetime | None) -> Trigger:
        kinds = ", ".join(sorted(alert.kinds)) or "drift"
        return cls(
            TriggerKind.DRIFT_ALERT,
            alert.alert_id,
            f"drift-alert:{alert.alert_id}",
            f"{alert.severity.name} {kinds} alert on version {alert.version}: "
            f"{alert.drifted_features} drifted feature(s)",
            occurred_at=occurred_at,
        )

    @classmethod
    def metric_decay(cls, policy: Policy, window: StoredWindow) -> Trigger:
        rule = policy.decay_rule()
        return cls(
            TriggerKind.METRIC_DECAY,
            window.window_id,
            f"metric-decay:{window.window_id}",
            f"{policy.decay_trigger.metric.value} of version {window.version} past "
            f"{rule.threshold:g} for {rule.consecutive_windows} window(s)",
            occurred_at=window.window_end,
        )

    @classmethod
    def schedule(cls, cron: str, slot: datetime) -> Trigger:
        return cls(
            TriggerKind.SCHEDULE,
            f"{cron}@{slot.isoformat()}",
            f"schedule:{cron}@{slot.isoformat()}",
            f"scheduled by {cron!r}",
            occurred_at=slot,
        )

    @classmethod
    def manual(cls, key: str, actor: str, reason: str, now: datetime) -> Trigger:
        return cls(
            TriggerKind.MANUAL,
            key,
            f"manual:{actor}",
            reason or "started by hand",
            actor=actor,
            occurred_at=now,
        )


@dataclass(frozen=True)
class Dataset:
    """A run's training data: the CSV file named by its sha256, and where it came from."""

    uri: str
    sha256: str
    row_count: int
    logged_row_count: int
    window_start: datetime | None = None
    window_end: datetime | None = None
    production_dataset_sha256: str = ""


@dataclass(frozen=True)
class GateReport:
    """The gate's verdict on a candidate, as the run records it."""

    passed: bool
    metric: str
    higher_is_better: bool
    candidate_value: float
    production_value: float
    improvement: float
    min_improvement: float
    holdout_size: int
    holdout_sha256: str
    summary: str
    evaluated_at: datetime | None = None


@dataclass(frozen=True)
class Approval:
    approved: bool
    actor: str
    comment: str
    decided_at: datetime | None = None


class FailureStage(StrEnum):
    DATA = "data"
    TRAINING = "training"
    TIMEOUT = "timeout"
    REGISTRATION = "registration"
    GATING = "gating"
    CANCELLED = "cancelled"


class CandidateOutcome(StrEnum):
    PROMOTED = "promoted"
    AWAITING_APPROVAL = "awaiting_approval"
    REJECTED_BY_GATE = "rejected_by_gate"
    REJECTED_BY_REVIEWER = "rejected_by_reviewer"


@dataclass(frozen=True)
class RetrainRequested:
    run_id: str
    model: str
    trigger: Trigger
    base_version: int
    occurred_at: datetime


@dataclass(frozen=True)
class RetrainStarted:
    run_id: str
    model: str
    dataset: Dataset | None
    executor: ExecutorKind
    executor_job_id: str
    attempt: int
    occurred_at: datetime


@dataclass(frozen=True)
class RetrainSucceeded:
    run_id: str
    model: str
    candidate_version: int
    dataset: Dataset | None
    attempt: int
    training_seconds: float
    occurred_at: datetime


@dataclass(frozen=True)
class RetrainFailed:
    run_id: str
    model: str
    stage: FailureStage
    error: str
    attempt: int
    will_retry: bool
    log_tail: tuple[str, ...]
    occurred_at: datetime


@dataclass(frozen=True)
class CandidateGated:
    run_id: str
    model: str
    candidate_version: int
    production_version: int
    gate: GateReport | None
    outcome: CandidateOutcome
    actor: str
    comment: str
    occurred_at: datetime


RunEvent = RetrainRequested | RetrainStarted | RetrainSucceeded | RetrainFailed | CandidateGated


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
