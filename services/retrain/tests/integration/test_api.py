"""The retrain API: policies with precise errors, manual runs, sign-off, cancellation."""

from __future__ import annotations

import os

import grpc
import pytest

from flywheel.retrain.v1 import events_pb2 as retrain_events
from flywheel.retrain.v1 import retrain_pb2 as retrain_pb
from flywheel.retrain.v1 import types_pb2 as pb
from flywheel_testing.waiting import eventually

from .conftest import Loop, breast_cancer

INVALID = grpc.StatusCode.INVALID_ARGUMENT


async def _status(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call  # type: ignore[misc]
    return raised.value.code(), raised.value.details() or ""


async def test_policies_are_validated_and_versioned(loop: Loop) -> None:
    response = await loop.api.GetRetrainPolicy(retrain_pb.GetRetrainPolicyRequest(model=loop.model))
    assert response.is_default
    assert response.policy.gate.metric == "accuracy"

    def policy(**fields: object) -> retrain_pb.SetRetrainPolicyRequest:
        message = pb.RetrainPolicy(model=loop.model, **fields)  # type: ignore[arg-type]
        return retrain_pb.SetRetrainPolicyRequest(policy=message)

    cases = {
        "schedule_trigger.cron": policy(
            schedule_trigger=pb.ScheduleTrigger(enabled=True, cron="every monday")
        ),
        "time_zone": policy(schedule_trigger=pb.ScheduleTrigger(time_zone="Mars/Olympus")),
        "gate.metric": policy(gate=pb.EvaluationGate(metric="vibes")),
        "decay_trigger.metric": policy(decay_trigger=pb.DecayTrigger(enabled=True)),
        "max_retries": policy(executor=pb.ExecutorConfig(max_retries=99)),
        "entrypoint_override": policy(executor=pb.ExecutorConfig(entrypoint_override="'open")),
        "policy.model": retrain_pb.SetRetrainPolicyRequest(policy=pb.RetrainPolicy(model="Bad!")),
    }
    for field, request in cases.items():
        code, details = await _status(loop.api.SetRetrainPolicy(request))
        assert code == INVALID, field
        assert field in details, details

    stored = await loop.set_policy(min_new_labeled_samples=10)
    assert stored.revision == 1
    code, details = await _status(
        loop.api.SetRetrainPolicy(
            retrain_pb.SetRetrainPolicyRequest(policy=stored, expected_revision=0)
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "revision 1" in details
    response = await loop.api.GetRetrainPolicy(retrain_pb.GetRetrainPolicyRequest(model=loop.model))
    assert not response.is_default
    assert response.policy.min_new_labeled_samples == 10


async def test_runs_wait_for_sign_off_when_the_policy_asks(loop: Loop) -> None:
    await loop.set_policy(
        approval_mode=pb.APPROVAL_MODE_HUMAN_SIGN_OFF,
        gate=pb.EvaluationGate(metric="accuracy", holdout_size=100),
    )
    await loop.log_traffic(*breast_cancer(shift_sigmas=1.0))
    request = retrain_pb.TriggerRetrainRequest(
        model=loop.model, reason="quarterly refresh", idempotency_key="refresh-1"
    )
    started = await loop.api.TriggerRetrain(request)
    again = await loop.api.TriggerRetrain(request)
    assert again.replayed
    assert again.run.run_id == started.run.run_id
    assert started.run.trigger.kind == pb.TRIGGER_KIND_MANUAL

    run = await loop.wait_run({pb.RUN_STATE_AWAITING_APPROVAL, pb.RUN_STATE_FAILED})
    assert run.state == pb.RUN_STATE_AWAITING_APPROVAL, run.error
    assert await loop.production() == 1
    approved = await loop.api.ApproveCandidate(
        retrain_pb.ApproveCandidateRequest(run_id=run.run_id, comment="looks right")
    )
    assert approved.run.state == pb.RUN_STATE_PROMOTED
    assert approved.run.approval.approved
    assert approved.run.approval.comment == "looks right"
    assert await loop.production() == run.candidate_version
    code, _ = await _status(
        loop.api.RejectCandidate(retrain_pb.RejectCandidateRequest(run_id=run.run_id))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION


async def test_a_rejected_candidate_leaves_production_alone(loop: Loop) -> None:
    await loop.set_policy(
        approval_mode=pb.APPROVAL_MODE_HUMAN_SIGN_OFF,
        gate=pb.EvaluationGate(metric="accuracy", holdout_size=100),
    )
    await loop.log_traffic(*breast_cancer(shift_sigmas=1.0))
    await loop.api.TriggerRetrain(retrain_pb.TriggerRetrainRequest(model=loop.model))
    run = await loop.wait_run({pb.RUN_STATE_AWAITING_APPROVAL, pb.RUN_STATE_FAILED})
    rejected = await loop.api.RejectCandidate(
        retrain_pb.RejectCandidateRequest(run_id=run.run_id, reason="waiting for the audit")
    )
    assert rejected.run.state == pb.RUN_STATE_REJECTED
    assert "waiting for the audit" in rejected.run.error
    assert await loop.production() == 1

    async def announced() -> bool:
        return len(loop.of_type("CandidateGated")) == 2

    await eventually(announced, 30)
    outcomes = [e.outcome for e in loop.of_type("CandidateGated")]
    assert outcomes == [
        retrain_events.CANDIDATE_OUTCOME_AWAITING_APPROVAL,
        retrain_events.CANDIDATE_OUTCOME_REJECTED_BY_REVIEWER,
    ]


async def test_a_cancelled_run_stops_its_training_job(loop: Loop) -> None:
    await loop.set_policy(
        executor=pb.ExecutorConfig(entrypoint_override='python -c "import time; time.sleep(120)"'),
        gate=pb.EvaluationGate(metric="accuracy", holdout_size=100),
    )
    await loop.log_traffic(*breast_cancer(shift_sigmas=1.0))
    await loop.api.TriggerRetrain(retrain_pb.TriggerRetrainRequest(model=loop.model))

    async def job_running() -> bool:
        runs = await loop.runs()
        return bool(runs) and bool(runs[0].executor_job_id)

    await eventually(job_running, 90)
    [run] = await loop.runs()
    cancelled = await loop.api.CancelRun(
        retrain_pb.CancelRunRequest(run_id=run.run_id, reason="wrong data window")
    )
    assert cancelled.run.state == pb.RUN_STATE_CANCELLED
    pid = int(run.executor_job_id)

    async def job_gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    await eventually(job_gone, 20)
    code, _ = await _status(loop.api.CancelRun(retrain_pb.CancelRunRequest(run_id=run.run_id)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION


async def test_bad_requests_get_precise_statuses(loop: Loop) -> None:
    code, details = await _status(
        loop.api.TriggerRetrain(retrain_pb.TriggerRetrainRequest(model="never-registered"))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "no production version" in details
    code, _ = await _status(loop.api.GetRun(retrain_pb.GetRunRequest(run_id="nope")))
    assert code == grpc.StatusCode.NOT_FOUND
    code, _ = await _status(loop.api.GetRun(retrain_pb.GetRunRequest()))
    assert code == INVALID
    code, _ = await _status(loop.api.ListRuns(retrain_pb.ListRunsRequest(page_token="???")))
    assert code == INVALID
    code, _ = await _status(
        loop.api.ApproveCandidate(retrain_pb.ApproveCandidateRequest(run_id="nope"))
    )
    assert code == grpc.StatusCode.NOT_FOUND
