"""A model's retrain policy, its validation, and the rules, guards and gate it resolves
into."""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum, StrEnum
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from flywheel_common.errors import InvalidArgument
from flywheel_common.names import check_name
from flywheel_retrain.domain.decisions import (
    AlertRule,
    DecayRule,
    FollowUpRule,
    Guards,
    Severity,
)
from flywheel_retrain.domain.gate import Gate
from flywheel_retrain.evaluation import METRICS

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_HOLDOUT_SIZE = 200
DEFAULT_WINDOW = timedelta(days=7)
DEFAULT_MIN_ROWS = 1000
DEFAULT_DROP_FROM_GATE = 0.05
"""Accuracy a promoted version may lose against its gate's score before it is retrained: a
gate on 200 labels measures accuracy to about +-0.02 (one standard error at 0.9)."""
DEFAULT_MAX_WAIT = timedelta(hours=1)
DEFAULT_FOLLOW_UP_GROWTH = 4
MAX_RETRIES = 10


class DecayMetric(StrEnum):
    UNSPECIFIED = "unspecified"
    ACCURACY = "accuracy"
    MEAN_ABSOLUTE_ERROR = "mean_absolute_error"
    ERROR_RATE = "error_rate"
    ESTIMATED_ACCURACY = "estimated_accuracy"
    """Expected from the predictions' confidence before labels arrive (the drift detector's
    CBPE estimate)."""


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
    relative_to_gate: bool = False
    """`threshold` is the distance from the version's gate score, not a level."""


GATE_METRIC_OF = {
    DecayMetric.ACCURACY: "accuracy",
    DecayMetric.ESTIMATED_ACCURACY: "accuracy",
    DecayMetric.MEAN_ABSOLUTE_ERROR: "mae",
}
"""The gate metric a decay metric is measured from, when relative to the gate."""


@dataclass(frozen=True)
class ScheduleTrigger:
    enabled: bool = False
    cron: str = ""
    time_zone: str = ""


@dataclass(frozen=True)
class FollowUpTrigger:
    enabled: bool = False
    growth: int = 0
    """0: DEFAULT_FOLLOW_UP_GROWTH."""


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
    since_change: bool = False
    """A concept-drift run trains on rows since the change only."""
    min_rows_since_change: int = 0
    """Rows since the change, beyond the holdout, a run trained since one waits for."""
    max_wait: timedelta = timedelta(0)
    """How long a run waits for them at most (0: DEFAULT_MAX_WAIT)."""


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
    follow_up_trigger: FollowUpTrigger = FollowUpTrigger()
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
        and concept drift retrain, and so does a version a run promoted whose accuracy
        falls 0.05 below its gate's for two windows of 200 labels or more; at most once an
        hour, on the last week's labelled predictions and the production version's data
        (after a concept change or such a decay: on the 1,000 or more labelled predictions
        since it began, and once more when four times the rows it learnt from have come
        since), promoted automatically when the candidate is at least as accurate as
        production on the newest 200 labeled predictions."""
        return cls(
            model=model,
            enabled=True,
            alert_trigger=AlertTrigger(
                enabled=True,
                min_severity=Severity.MEDIUM,
                min_drifted_features=1,
                on_concept_drift=True,
            ),
            decay_trigger=DecayTrigger(
                enabled=True,
                metric=DecayMetric.ACCURACY,
                threshold=DEFAULT_DROP_FROM_GATE,
                consecutive_windows=2,
                min_labeled_count=DEFAULT_HOLDOUT_SIZE,
                relative_to_gate=True,
            ),
            follow_up_trigger=FollowUpTrigger(enabled=True, growth=DEFAULT_FOLLOW_UP_GROWTH),
            cooldown=timedelta(hours=1),
            max_concurrent_runs=1,
            approval_mode=ApprovalMode.AUTOMATIC,
            gate=GateConfig(
                metric="accuracy", goal=MetricGoal.MAXIMIZE, holdout_size=DEFAULT_HOLDOUT_SIZE
            ),
            training_data=TrainingData(
                window=DEFAULT_WINDOW,
                include_production_dataset=True,
                since_change=True,
                min_rows_since_change=DEFAULT_MIN_ROWS,
            ),
            executor=ExecutorConfig(max_retries=1),
        )

    def validate(self) -> None:
        """INVALID_ARGUMENT naming the first field to fix."""
        check_name("policy.model", self.model)
        if self.alert_trigger.min_drifted_features < 0:
            raise InvalidArgument("alert_trigger.min_drifted_features cannot be negative")
        decay = self.decay_trigger
        if decay.enabled:
            if decay.metric is DecayMetric.UNSPECIFIED:
                raise InvalidArgument(
                    "decay_trigger.metric is required when decay is enabled: ACCURACY, "
                    "ESTIMATED_ACCURACY, MEAN_ABSOLUTE_ERROR or ERROR_RATE"
                )
            if not math.isfinite(decay.threshold):
                raise InvalidArgument("decay_trigger.threshold must be a finite number")
            if decay.relative_to_gate and decay.metric not in GATE_METRIC_OF:
                raise InvalidArgument(
                    "decay_trigger.relative_to_gate needs ACCURACY, ESTIMATED_ACCURACY or "
                    "MEAN_ABSOLUTE_ERROR: the gate measures no error rate"
                )
            if decay.relative_to_gate and decay.threshold < 0:
                raise InvalidArgument(
                    "decay_trigger.threshold is a distance from the gate's score when "
                    "relative_to_gate is set: it cannot be negative"
                )
        if decay.consecutive_windows < 0 or decay.min_labeled_count < 0:
            raise InvalidArgument("decay_trigger counts cannot be negative")
        self._validate_schedule()
        if self.follow_up_trigger.growth < 0 or self.follow_up_trigger.growth == 1:
            raise InvalidArgument(
                "follow_up_trigger.growth must be 0 (meaning "
                f"{DEFAULT_FOLLOW_UP_GROWTH}) or at least 2: it is how many times the rows a "
                "version learnt from must have come since its change"
            )
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
        if data.window < timedelta(0) or data.max_wait < timedelta(0):
            raise InvalidArgument(
                "training_data.window and training_data.max_wait cannot be negative"
            )
        if data.max_rows < 0 or data.min_rows_since_change < 0:
            raise InvalidArgument(
                "training_data.max_rows and training_data.min_rows_since_change cannot be negative"
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

    @property
    def max_wait(self) -> timedelta:
        return self.training_data.max_wait or DEFAULT_MAX_WAIT

    def alert_rule(self) -> AlertRule:
        trigger = self.alert_trigger
        return AlertRule(
            enabled=self.enabled and trigger.enabled,
            min_severity=max(trigger.min_severity, Severity.LOW),
            min_drifted_features=trigger.min_drifted_features,
            kinds=frozenset(trigger.kinds or ("data", "prediction")),
            on_concept_drift=trigger.on_concept_drift,
        )

    def decay_rule(self, gate_score: float | None = None) -> DecayRule:
        """The decay rule; relative to the gate, it watches only a version whose gate
        measured `gate_score`."""
        trigger = self.decay_trigger
        higher = trigger.metric in (DecayMetric.ACCURACY, DecayMetric.ESTIMATED_ACCURACY)
        threshold = trigger.threshold
        if trigger.relative_to_gate and gate_score is not None:
            threshold = gate_score - threshold if higher else gate_score + threshold
        return DecayRule(
            enabled=self.enabled
            and trigger.enabled
            and (gate_score is not None or not trigger.relative_to_gate),
            higher_is_better=higher,
            threshold=threshold,
            consecutive_windows=max(trigger.consecutive_windows, 1),
            min_labeled=trigger.min_labeled_count,
        )

    def follow_up_rule(self) -> FollowUpRule:
        trigger = self.follow_up_trigger
        return FollowUpRule(
            enabled=self.enabled and trigger.enabled,
            growth=trigger.growth or DEFAULT_FOLLOW_UP_GROWTH,
        )

    def guards(self, *, manual: bool, ignore_cooldown: bool) -> Guards:
        return Guards(
            cooldown=timedelta(0) if ignore_cooldown else self.cooldown,
            max_concurrent_runs=max(self.max_concurrent_runs, 1),
            # New labels gate automatic runs; a person asking for a run has their reasons.
            min_new_labeled_samples=0 if manual else self.min_new_labeled_samples,
            # A person asking while runs are in progress is told so rather than queued.
            queue_when_busy=not manual,
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


def next_data_check(waited: timedelta) -> timedelta:
    """When a run waiting for rows looks again: soon at first (labels of a busy model come
    by the hundred a second), less often the longer it waits (each look reads the logs)."""
    return min(max(waited / 4, timedelta(seconds=2)), timedelta(minutes=1))
