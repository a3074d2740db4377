"""The gate: whether a candidate beats production on the holdout, and the verdict a run
records."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


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
