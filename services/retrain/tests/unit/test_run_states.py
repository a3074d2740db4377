"""The retrain run's state machine: the contract's states, and the only ways between them."""

import itertools
from dataclasses import replace
from datetime import UTC, datetime

import pytest

from flywheel.retrain.v1 import types_pb2 as pb
from flywheel_common.errors import FailedPrecondition
from flywheel_retrain.domain import (
    ACTIVE,
    NEXT_STATES,
    TERMINAL,
    ApprovalMode,
    CandidateGated,
    CandidateOutcome,
    Dataset,
    ExecutorKind,
    FailureStage,
    GateReport,
    IllegalTransition,
    Policy,
    RetrainFailed,
    RetrainRequested,
    RetrainStarted,
    RetrainSucceeded,
    Run,
    RunState,
    StaleRun,
    Trigger,
    check_transition,
)

LOCAL = ExecutorKind.LOCAL


def test_the_states_are_the_contracts_by_name_and_number() -> None:
    for state in RunState:
        assert pb.RunState.Name(pb.RunState.ValueType(state)) == f"RUN_STATE_{state.name}"
    assert len(RunState) == len(pb.RunState.keys()) - 1  # all but UNSPECIFIED


def test_every_path_of_a_run_is_an_edge_of_the_machine() -> None:
    paths = [
        ["QUEUED", "PREPARING_DATA", "TRAINING", "TRAINING", "GATING", "PROMOTED"],
        ["QUEUED", "PREPARING_DATA", "TRAINING", "GATING", "AWAITING_APPROVAL", "REJECTED"],
        ["QUEUED", "PREPARING_DATA", "TRAINING", "GATING", "REJECTED"],
        ["QUEUED", "PREPARING_DATA", "FAILED"],
        ["QUEUED", "CANCELLED"],
        ["QUEUED", "PREPARING_DATA", "TRAINING", "GATING", "AWAITING_APPROVAL", "CANCELLED"],
    ]
    for path in paths:
        for before, after in itertools.pairwise(path):
            check_transition("r1", RunState[before], RunState[after])


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (RunState.QUEUED, RunState.TRAINING),  # data comes first
        (RunState.TRAINING, RunState.PROMOTED),  # the gate comes first
        (RunState.PROMOTED, RunState.QUEUED),  # a finished run stays finished
        (RunState.FAILED, RunState.FAILED),
        (RunState.AWAITING_APPROVAL, RunState.GATING),
    ],
)
def test_anything_else_is_refused(before: RunState, after: RunState) -> None:
    with pytest.raises(IllegalTransition, match=f"from {before.label} to {after.label}"):
        check_transition("r1", before, after)


def test_finished_runs_go_nowhere_and_unfinished_ones_can_always_end() -> None:
    assert {
        RunState.PROMOTED,
        RunState.REJECTED,
        RunState.FAILED,
        RunState.CANCELLED,
    } == TERMINAL
    assert all(not NEXT_STATES[state] for state in TERMINAL)
    assert all({RunState.FAILED, RunState.CANCELLED} <= NEXT_STATES[state] for state in ACTIVE)


# The Run aggregate: each transition checks the machine and records its event.

T0 = datetime(2026, 11, 23, 12, tzinfo=UTC)
DATASET = Dataset("file:///d.csv", "d" * 64, 10, 8)


def queued(policy: Policy | None = None) -> Run:
    trigger = Trigger.manual("k1", "alice", "", T0)
    return Run.request("r1", "iris", trigger, 1, policy or Policy.default("iris"), LOCAL, T0)


def gated(passed: bool = True, policy: Policy | None = None) -> Run:
    run = queued(policy).prepare_data(T0).data_ready(DATASET, "/h.csv", T0).trained(2, 1, 3.0, T0)
    report = GateReport(passed, "accuracy", True, 0.9, 0.8, 0.1, 0.0, 10, "h", "summary")
    return run.record_gate(report, 1, T0)


def test_a_new_run_is_queued_and_records_that_it_was_requested() -> None:
    run = queued()
    assert run.state is RunState.QUEUED
    [event] = run.events
    assert isinstance(event, RetrainRequested)
    assert (event.run_id, event.base_version, event.trigger.key) == (
        "r1",
        1,
        "TRIGGER_KIND_MANUAL:k1",
    )


def test_each_step_records_its_event() -> None:
    run = queued().prepare_data(T0).data_ready(DATASET, "/h.csv", T0)
    assert (run.state, run.attempt) == (RunState.TRAINING, 1)
    run = run.job_started("pid-1", 1, T0)
    assert isinstance(run.events[-1], RetrainStarted)
    assert run.events[-1].dataset == DATASET
    assert run.started_at == T0
    run = run.trained(7, 1, 3.0, T0)
    assert run.state is RunState.GATING
    assert isinstance(run.events[-1], RetrainSucceeded)
    assert run.events[-1].candidate_version == 7


def test_the_gate_decides_by_verdict_and_approval_mode() -> None:
    promoted = gated().gated(T0)
    assert promoted.state is RunState.PROMOTED
    assert promoted.finished_at == T0
    last = promoted.events[-1]
    assert isinstance(last, CandidateGated)
    assert last.outcome is CandidateOutcome.PROMOTED
    rejected = gated(passed=False).gated(T0)
    assert rejected.state is RunState.REJECTED
    assert rejected.error == "rejected by the gate: summary"
    sign_off = replace(Policy.default("iris"), approval_mode=ApprovalMode.HUMAN_SIGN_OFF)
    waiting = gated(policy=sign_off).gated(T0)
    assert waiting.state is RunState.AWAITING_APPROVAL
    assert waiting.finished_at is None


def test_attempts_retry_until_the_policy_allows_no_more() -> None:
    run = queued().prepare_data(T0).data_ready(DATASET, "/h.csv", T0)
    run = run.attempt_failed(FailureStage.TIMEOUT, "slow", 1, (), T0)
    assert (run.state, run.attempt) == (RunState.TRAINING, 2)
    run = run.attempt_failed(FailureStage.TRAINING, "exit 1", 2, ("boom",), T0)
    assert (run.state, run.error) == (RunState.FAILED, "exit 1")
    last = run.events[-1]
    assert isinstance(last, RetrainFailed)
    assert not last.will_retry
    assert last.log_tail == ("boom",)


def test_illegal_transitions_are_refused() -> None:
    with pytest.raises(IllegalTransition, match="from queued to gating"):
        queued().trained(2, 1, 1.0, T0)
    with pytest.raises(IllegalTransition, match="from promoted to"):
        gated().gated(T0).gated(T0)
    with pytest.raises(IllegalTransition):
        queued().data_ready(DATASET, "/h.csv", T0)  # data is prepared first


def test_people_may_only_decide_what_the_state_allows() -> None:
    with pytest.raises(FailedPrecondition, match="is QUEUED, not AWAITING_APPROVAL"):
        queued().approve("bob", "", T0)
    finished = gated().gated(T0)
    with pytest.raises(FailedPrecondition, match="already PROMOTED; only unfinished runs"):
        finished.cancel("bob", "", T0)
    with pytest.raises(StaleRun, match="r1 is PROMOTED"):
        finished.expect(RunState.GATING)
    cancelled = queued().cancel("bob", "oops", T0)
    assert cancelled.state is RunState.CANCELLED
    assert cancelled.error == "cancelled by bob: oops"
    last = cancelled.events[-1]
    assert isinstance(last, RetrainFailed)
    assert last.stage is FailureStage.CANCELLED
