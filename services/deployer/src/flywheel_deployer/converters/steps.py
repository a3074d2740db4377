"""A rollout's steps and their analysis results between the domain and the protobuf
contract (API messages, events and the stored JSON documents).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from google.protobuf import json_format

from flywheel.deployer.v1 import types_pb2 as pb
from flywheel_common.timestamps import datetime_of, optional_timestamp
from flywheel_deployer.analysis import Check, Decision, Metric, Outcome
from flywheel_deployer.converters.documents import to_json
from flywheel_deployer.domain import AnalysisResult, Step

_DECISION_NUMBERS = {
    Decision.WAIT: pb.ANALYSIS_DECISION_WAIT,
    Decision.ADVANCE: pb.ANALYSIS_DECISION_ADVANCE,
    Decision.PROMOTE: pb.ANALYSIS_DECISION_PROMOTE,
    Decision.ROLLBACK: pb.ANALYSIS_DECISION_ROLLBACK,
    Decision.PAUSE: pb.ANALYSIS_DECISION_PAUSE,
}
_DECISIONS = {number: decision for decision, number in _DECISION_NUMBERS.items()}
_METRIC_NUMBERS = {
    Metric.ERROR_RATE: pb.ANALYSIS_METRIC_ERROR_RATE,
    Metric.LATENCY_P99_RATIO: pb.ANALYSIS_METRIC_LATENCY_P99_RATIO,
    Metric.JS_DIVERGENCE: pb.ANALYSIS_METRIC_JS_DIVERGENCE,
    Metric.ACCURACY_DELTA: pb.ANALYSIS_METRIC_ACCURACY_DELTA,
}
_METRICS = {number: metric for metric, number in _METRIC_NUMBERS.items()}
_OUTCOME_NUMBERS = {
    Outcome.PASSED: pb.CHECK_OUTCOME_PASSED,
    Outcome.FAILED: pb.CHECK_OUTCOME_FAILED,
    Outcome.SKIPPED: pb.CHECK_OUTCOME_SKIPPED,
}
_OUTCOMES = {number: outcome for outcome, number in _OUTCOME_NUMBERS.items()}


def analysis_message(result: AnalysisResult) -> pb.AnalysisResult:
    message = pb.AnalysisResult(
        decision=_DECISION_NUMBERS[result.decision],
        checks=[
            pb.AnalysisCheck(
                metric=_METRIC_NUMBERS[check.metric],
                observed=check.observed,
                threshold=check.threshold,
                candidate_value=check.candidate,
                baseline_value=check.baseline,
                outcome=_OUTCOME_NUMBERS[check.outcome],
            )
            for check in result.checks
        ],
        candidate_version=result.candidate_version,
        baseline_version=result.baseline_version,
        candidate_request_count=result.candidate_requests,
        baseline_request_count=result.baseline_requests,
        window_ids=list(result.window_ids),
        step_index=result.step_index,
        weight_percent=result.weight,
        summary=result.summary,
    )
    analyzed = optional_timestamp(result.analyzed_at)
    if analyzed is not None:
        message.analyzed_at.CopyFrom(analyzed)
    return message


def analysis_of(message: pb.AnalysisResult) -> AnalysisResult:
    return AnalysisResult(
        decision=_DECISIONS.get(message.decision, Decision.WAIT),
        checks=tuple(
            Check(
                _METRICS.get(check.metric, Metric.ERROR_RATE),
                check.observed,
                check.threshold,
                check.candidate_value,
                check.baseline_value,
                _OUTCOMES.get(check.outcome, Outcome.SKIPPED),
            )
            for check in message.checks
        ),
        candidate_version=message.candidate_version,
        baseline_version=message.baseline_version,
        candidate_requests=message.candidate_request_count,
        baseline_requests=message.baseline_request_count,
        window_ids=tuple(message.window_ids),
        step_index=message.step_index,
        weight=message.weight_percent,
        summary=message.summary,
        analyzed_at=(
            datetime_of(message.analyzed_at, "analyzed_at")
            if message.HasField("analyzed_at")
            else None
        ),
    )


def analysis_document(result: AnalysisResult | None) -> dict[str, Any] | None:
    return None if result is None else to_json(analysis_message(result))


def analysis_from_document(document: Mapping[str, Any] | None) -> AnalysisResult | None:
    if not document:
        return None
    return analysis_of(json_format.ParseDict(dict(document), pb.AnalysisResult()))


def step_message(step: Step) -> pb.RolloutStep:
    message = pb.RolloutStep(index=step.index, weight_percent=step.weight)
    for name, when in (("started_at", step.started_at), ("finished_at", step.finished_at)):
        stamp = optional_timestamp(when)
        if stamp is not None:
            getattr(message, name).CopyFrom(stamp)
    if step.analysis is not None:
        message.analysis.CopyFrom(analysis_message(step.analysis))
    return message


def step_of(message: pb.RolloutStep) -> Step:
    return Step(
        index=message.index,
        weight=message.weight_percent,
        started_at=(
            datetime_of(message.started_at, "started_at")
            if message.HasField("started_at")
            else None
        ),
        finished_at=(
            datetime_of(message.finished_at, "finished_at")
            if message.HasField("finished_at")
            else None
        ),
        analysis=analysis_of(message.analysis) if message.HasField("analysis") else None,
    )


def steps_document(steps: Sequence[Step]) -> list[dict[str, Any]]:
    return [to_json(step_message(step)) for step in steps]


def steps_from_document(documents: Sequence[Mapping[str, Any]] | None) -> tuple[Step, ...]:
    return tuple(
        step_of(json_format.ParseDict(dict(each), pb.RolloutStep())) for each in documents or ()
    )
