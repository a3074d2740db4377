"""Canary analysis: per-version metric windows in, a decision with the numbers behind it out.

Pure numpy-free arithmetic over window summaries, so the decision can be unit tested and
replayed from stored windows after a restart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class Decision(StrEnum):
    WAIT = "wait"
    ADVANCE = "advance"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    PAUSE = "pause"


class Metric(StrEnum):
    ERROR_RATE = "error_rate"
    LATENCY_P99_RATIO = "latency_p99_ratio"
    JS_DIVERGENCE = "js_divergence"
    ACCURACY_DELTA = "accuracy_delta"


class Outcome(StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"


class InsufficientData(StrEnum):
    WAIT = "wait"
    PAUSE = "pause"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class Thresholds:
    max_error_rate: float | None = None
    max_latency_p99_ratio: float | None = None
    max_js_divergence: float | None = None
    min_accuracy_delta: float | None = None
    """Candidate accuracy minus baseline accuracy must stay at or above this (e.g. -0.02)."""


@dataclass(frozen=True)
class StepRule:
    """When a step has seen enough to be judged."""

    min_seconds: float
    min_requests: int
    max_seconds: float | None = None
    on_insufficient_data: InsufficientData = InsufficientData.WAIT


@dataclass
class Window:
    """One metric window of one version, as the drift detector summarises it."""

    window_id: str
    requests: int
    errors: int
    latency_p99_ms: float
    outputs: dict[str, int] = field(default_factory=dict)
    """Predictions per output bin or class."""
    labeled: int = 0
    accuracy: float | None = None


@dataclass(frozen=True)
class Totals:
    """Windows of one version merged: counts add up, p99 is the request-weighted mean."""

    requests: int = 0
    errors: int = 0
    latency_p99_ms: float | None = None
    outputs: Mapping[str, int] = field(default_factory=dict)
    labeled: int = 0
    accuracy: float | None = None
    window_ids: tuple[str, ...] = ()

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def merge(windows: Iterable[Window]) -> Totals:
    requests = errors = labeled = 0
    latency_weighted = correct = 0.0
    outputs: dict[str, int] = {}
    ids: list[str] = []
    for window in windows:
        ids.append(window.window_id)
        requests += window.requests
        errors += window.errors
        latency_weighted += window.latency_p99_ms * window.requests
        for key, count in window.outputs.items():
            outputs[key] = outputs.get(key, 0) + count
        if window.accuracy is not None and window.labeled:
            labeled += window.labeled
            correct += window.accuracy * window.labeled
    return Totals(
        requests=requests,
        errors=errors,
        latency_p99_ms=latency_weighted / requests if requests else None,
        outputs=outputs,
        labeled=labeled,
        accuracy=correct / labeled if labeled else None,
        window_ids=tuple(ids),
    )


def js_divergence(left: Mapping[str, int], right: Mapping[str, int]) -> float:
    """Jensen-Shannon divergence in bits (0: same distribution, 1: disjoint)."""
    left_total, right_total = sum(left.values()), sum(right.values())
    if not left_total or not right_total:
        return 0.0
    divergence = 0.0
    for key in set(left) | set(right):
        p = left.get(key, 0) / left_total
        q = right.get(key, 0) / right_total
        m = (p + q) / 2
        if p:
            divergence += p * math.log2(p / m) / 2
        if q:
            divergence += q * math.log2(q / m) / 2
    return max(0.0, min(1.0, divergence))


@dataclass(frozen=True)
class Check:
    metric: Metric
    observed: float
    threshold: float
    candidate: float
    baseline: float
    outcome: Outcome


@dataclass(frozen=True)
class Analysis:
    decision: Decision
    checks: tuple[Check, ...]
    candidate: Totals
    baseline: Totals
    summary: str


def checks(thresholds: Thresholds, candidate: Totals, baseline: Totals) -> list[Check]:
    """Every configured check; one without the data it needs is skipped, never failed."""
    results: list[Check] = []
    if thresholds.max_error_rate is not None:
        rate = candidate.error_rate
        results.append(
            Check(
                Metric.ERROR_RATE,
                rate,
                thresholds.max_error_rate,
                rate,
                baseline.error_rate,
                Outcome.FAILED if rate > thresholds.max_error_rate else Outcome.PASSED,
            )
        )
    if thresholds.max_latency_p99_ratio is not None:
        cand, base = candidate.latency_p99_ms, baseline.latency_p99_ms
        if cand is None or not base:
            results.append(_skipped(Metric.LATENCY_P99_RATIO, thresholds.max_latency_p99_ratio))
        else:
            ratio = cand / base
            failed = ratio > thresholds.max_latency_p99_ratio
            results.append(
                Check(
                    Metric.LATENCY_P99_RATIO,
                    ratio,
                    thresholds.max_latency_p99_ratio,
                    cand,
                    base,
                    Outcome.FAILED if failed else Outcome.PASSED,
                )
            )
    if thresholds.max_js_divergence is not None:
        if not candidate.outputs or not baseline.outputs:
            results.append(_skipped(Metric.JS_DIVERGENCE, thresholds.max_js_divergence))
        else:
            divergence = js_divergence(candidate.outputs, baseline.outputs)
            failed = divergence > thresholds.max_js_divergence
            results.append(
                Check(
                    Metric.JS_DIVERGENCE,
                    divergence,
                    thresholds.max_js_divergence,
                    divergence,
                    0.0,
                    Outcome.FAILED if failed else Outcome.PASSED,
                )
            )
    if thresholds.min_accuracy_delta is not None:
        cand_acc, base_acc = candidate.accuracy, baseline.accuracy
        if cand_acc is None or base_acc is None:
            results.append(_skipped(Metric.ACCURACY_DELTA, thresholds.min_accuracy_delta))
        else:
            delta = cand_acc - base_acc
            failed = delta < thresholds.min_accuracy_delta
            results.append(
                Check(
                    Metric.ACCURACY_DELTA,
                    delta,
                    thresholds.min_accuracy_delta,
                    cand_acc,
                    base_acc,
                    Outcome.FAILED if failed else Outcome.PASSED,
                )
            )
    return results


def _skipped(metric: Metric, threshold: float) -> Check:
    return Check(metric, 0.0, threshold, 0.0, 0.0, Outcome.SKIPPED)


def analyse(
    rule: StepRule,
    thresholds: Thresholds,
    candidate: Totals,
    baseline: Totals,
    step_age_seconds: float,
    last_step: bool,
) -> Analysis:
    """Judge the current step.

    A failed check rolls back as soon as the candidate has served `min_requests`, without
    waiting out the step: bad versions leave fast. Passing checks advance only after both
    the minimum duration and the minimum request count.
    """
    results = checks(thresholds, candidate, baseline)
    failed = [c for c in results if c.outcome is Outcome.FAILED]
    enough = candidate.requests >= rule.min_requests
    if enough and failed:
        return Analysis(
            Decision.ROLLBACK,
            tuple(results),
            candidate,
            baseline,
            "; ".join(_describe(c) for c in failed),
        )
    if enough and step_age_seconds >= rule.min_seconds:
        decision = Decision.PROMOTE if last_step else Decision.ADVANCE
        summary = f"{candidate.requests} requests, all checks passed" + (
            f" ({', '.join(_describe(c) for c in results if c.outcome is Outcome.PASSED)})"
            if results
            else ""
        )
        return Analysis(decision, tuple(results), candidate, baseline, summary)
    if rule.max_seconds is not None and step_age_seconds >= rule.max_seconds and not enough:
        action = {
            InsufficientData.WAIT: Decision.WAIT,
            InsufficientData.PAUSE: Decision.PAUSE,
            InsufficientData.ROLLBACK: Decision.ROLLBACK,
        }[rule.on_insufficient_data]
        summary = (
            f"only {candidate.requests} of {rule.min_requests} requests after "
            f"{step_age_seconds:.0f}s (limit {rule.max_seconds:.0f}s)"
        )
        return Analysis(action, tuple(results), candidate, baseline, summary)
    summary = (
        f"waiting: {candidate.requests}/{rule.min_requests} requests, "
        f"{step_age_seconds:.1f}/{rule.min_seconds:.1f}s"
    )
    return Analysis(Decision.WAIT, tuple(results), candidate, baseline, summary)


def _describe(check: Check) -> str:
    relation = {
        Metric.ERROR_RATE: ">",
        Metric.LATENCY_P99_RATIO: ">",
        Metric.JS_DIVERGENCE: ">",
        Metric.ACCURACY_DELTA: "<",
    }[check.metric]
    if check.outcome is Outcome.PASSED:
        relation = {"<": ">=", ">": "<="}[relation]
    return f"{check.metric} {check.observed:.4g} {relation} {check.threshold:.4g}"
