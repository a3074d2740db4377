"""Retrain runs and the decisions around them: pure, no I/O, no protobuf, no SQL.

A `Run` is one explicit state machine (`NEXT_STATES`): each transition checks its rules and
records the event it causes, and the unit of work stores the run with those events in one
transaction. The policy says which drift alerts, decaying metrics and schedule slots warrant
a run; the guards (one run per trigger, a cooldown, a cap on concurrent runs, enough new
labels) keep a burst of alerts from becoming a burst of runs; the gate compares a candidate
with production on the same holdout. Modules, each depending only on those above it:

- `states`: the run's states and its state machine (`NEXT_STATES`, `check_transition`).
- `decisions`: alert rules, decay tracking, follow-ups and the guards (`alert_matches`,
  `DecayTracker`, `follow_up_due`, `decide`).
- `gate`: whether a candidate beats production (`evaluate_gate`), and the `GateReport` a
  run records.
- `policy`: a model's retrain `Policy`, its validation, and the rules it resolves into.
- `windows`: metric windows as the trigger keeps them, and `decayed_window`.
- `values`: what a run keeps besides its state: its `Trigger`, `Dataset` and `Approval`.
- `events`: the events a run's transitions record (`RetrainRequested` ... `CandidateGated`).
- `run`: the `Run` aggregate and its transitions.
"""

from flywheel_retrain.domain.decisions import (
    Alert,
    AlertRule,
    DecayRule,
    DecayTracker,
    Decision,
    FollowUpRule,
    Guards,
    History,
    MetricWindow,
    Severity,
    Verdict,
    alert_matches,
    decide,
    follow_up_due,
)
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
from flywheel_retrain.domain.gate import Gate, GateReport, GateResult, evaluate_gate
from flywheel_retrain.domain.policy import (
    DEFAULT_HOLDOUT_SIZE,
    DEFAULT_MIN_ROWS,
    DEFAULT_WINDOW,
    GATE_METRIC_OF,
    MAX_RETRIES,
    AlertTrigger,
    ApprovalMode,
    DecayMetric,
    DecayTrigger,
    ExecutorConfig,
    ExecutorKind,
    FollowUpTrigger,
    GateConfig,
    MetricGoal,
    Policy,
    ScheduleTrigger,
    TrainingData,
    command_line,
    next_data_check,
)
from flywheel_retrain.domain.run import Run
from flywheel_retrain.domain.states import (
    ACTIVE,
    IN_PROGRESS,
    NEXT_STATES,
    TERMINAL,
    IllegalTransition,
    RunState,
    StaleRun,
    check_transition,
)
from flywheel_retrain.domain.values import (
    SYSTEM_ACTOR,
    Approval,
    Dataset,
    Trigger,
    TriggerKind,
    follow_up_key,
)
from flywheel_retrain.domain.windows import Decay, StoredWindow, decayed_window

__all__ = [
    "ACTIVE",
    "DEFAULT_HOLDOUT_SIZE",
    "DEFAULT_MIN_ROWS",
    "DEFAULT_WINDOW",
    "GATE_METRIC_OF",
    "IN_PROGRESS",
    "MAX_RETRIES",
    "NEXT_STATES",
    "SYSTEM_ACTOR",
    "TERMINAL",
    "Alert",
    "AlertRule",
    "AlertTrigger",
    "Approval",
    "ApprovalMode",
    "CandidateGated",
    "CandidateOutcome",
    "Dataset",
    "Decay",
    "DecayMetric",
    "DecayRule",
    "DecayTracker",
    "DecayTrigger",
    "Decision",
    "ExecutorConfig",
    "ExecutorKind",
    "FailureStage",
    "FollowUpRule",
    "FollowUpTrigger",
    "Gate",
    "GateConfig",
    "GateReport",
    "GateResult",
    "Guards",
    "History",
    "IllegalTransition",
    "MetricGoal",
    "MetricWindow",
    "Policy",
    "RetrainFailed",
    "RetrainRequested",
    "RetrainStarted",
    "RetrainSucceeded",
    "Run",
    "RunEvent",
    "RunState",
    "ScheduleTrigger",
    "Severity",
    "StaleRun",
    "StoredWindow",
    "TrainingData",
    "Trigger",
    "TriggerKind",
    "Verdict",
    "alert_matches",
    "check_transition",
    "command_line",
    "decayed_window",
    "decide",
    "evaluate_gate",
    "follow_up_due",
    "follow_up_key",
    "next_data_check",
]
