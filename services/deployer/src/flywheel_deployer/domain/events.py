"""The events a rollout's transitions record, which the outbox publishes, and what
triggered the rollout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from flywheel_deployer.domain.policy import Policy, Strategy
from flywheel_deployer.domain.steps import AnalysisResult


class Trigger(StrEnum):
    PROMOTION = "promotion"
    MANUAL = "manual"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class RolloutStarted:
    rollout_id: str
    model: str
    version: int
    baseline: int
    strategy: Strategy
    policy: Policy | None
    trigger: Trigger
    superseded_rollout_id: str
    actor: str
    reason: str
    occurred_at: datetime


@dataclass(frozen=True)
class RolloutStepAdvanced:
    rollout_id: str
    model: str
    version: int
    baseline: int
    from_step_index: int
    to_step_index: int
    from_weight: int
    to_weight: int
    analysis: AnalysisResult | None
    actor: str
    occurred_at: datetime


@dataclass(frozen=True)
class RolloutCompleted:
    rollout_id: str
    model: str
    version: int
    previous_version: int
    strategy: Strategy
    analysis: AnalysisResult | None
    forced: bool
    actor: str
    reason: str
    duration_seconds: float
    occurred_at: datetime


@dataclass(frozen=True)
class RolloutRolledBack:
    rollout_id: str
    model: str
    rolled_back_version: int
    restored_version: int
    automatic: bool
    analysis: AnalysisResult | None
    actor: str
    reason: str
    occurred_at: datetime


@dataclass(frozen=True)
class RolloutAborted:
    rollout_id: str
    model: str
    version: int
    restored_version: int
    superseded: bool
    superseded_by: str
    actor: str
    reason: str
    occurred_at: datetime


RolloutEvent = (
    RolloutStarted | RolloutStepAdvanced | RolloutCompleted | RolloutRolledBack | RolloutAborted
)
