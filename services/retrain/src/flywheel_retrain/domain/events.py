"""The events a run's transitions record, which the outbox publishes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from flywheel_retrain.domain.gate import GateReport
from flywheel_retrain.domain.policy import ExecutorKind
from flywheel_retrain.domain.values import Dataset, Trigger


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
