"""The steps a rollout went through, and the judgement analysis passed on each."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flywheel_deployer.analysis import Check, Decision


@dataclass(frozen=True)
class AnalysisResult:
    """One judgement of a step, with the numbers behind it, as a rollout keeps it."""

    decision: Decision
    checks: tuple[Check, ...]
    candidate_version: int
    baseline_version: int
    candidate_requests: int
    baseline_requests: int
    window_ids: tuple[str, ...]
    step_index: int
    weight: int
    summary: str
    analyzed_at: datetime | None = None


@dataclass(frozen=True)
class Step:
    """One step a rollout went through."""

    index: int
    weight: int
    started_at: datetime | None = None
    finished_at: datetime | None = None
    analysis: AnalysisResult | None = None
