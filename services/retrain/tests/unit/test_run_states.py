"""The retrain run's state machine: the contract's states, and the only ways between them."""

import itertools

import pytest

from flywheel.retrain.v1 import types_pb2 as pb
from flywheel_retrain.domain import (
    ACTIVE,
    NEXT_STATES,
    TERMINAL,
    IllegalTransition,
    RunState,
    check_transition,
)


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
