"""The run's states and its state machine: which state may follow which."""

from __future__ import annotations

from enum import IntEnum


class RunState(IntEnum):
    """Where a retrain run is; the numbers are how rows store it (and, by design, the
    contract's numbers too)."""

    QUEUED = 1
    PREPARING_DATA = 2
    TRAINING = 3
    GATING = 4
    AWAITING_APPROVAL = 5
    PROMOTED = 6
    REJECTED = 7
    FAILED = 8
    CANCELLED = 9

    @property
    def label(self) -> str:
        """The lower-case name people read in logs and metrics: `awaiting_approval`."""
        return self.name.lower()


IN_PROGRESS = frozenset({RunState.PREPARING_DATA, RunState.TRAINING, RunState.GATING})
"""States the run engine works in: a run found in one after a restart is resumed."""
ACTIVE = frozenset({RunState.QUEUED, *IN_PROGRESS, RunState.AWAITING_APPROVAL})
"""Unfinished runs. One awaiting sign-off still holds its slot: a second candidate would
compete with it."""
TERMINAL = frozenset(RunState) - ACTIVE

_ENDINGS = frozenset({RunState.FAILED, RunState.CANCELLED})
NEXT_STATES: dict[RunState, frozenset[RunState]] = {
    RunState.QUEUED: frozenset({RunState.PREPARING_DATA}) | _ENDINGS,
    # A run stays in a state while its attempts, job handles and gate result are recorded.
    RunState.PREPARING_DATA: frozenset({RunState.PREPARING_DATA, RunState.TRAINING}) | _ENDINGS,
    RunState.TRAINING: frozenset({RunState.TRAINING, RunState.GATING}) | _ENDINGS,
    RunState.GATING: frozenset(
        {RunState.GATING, RunState.AWAITING_APPROVAL, RunState.PROMOTED, RunState.REJECTED}
    )
    | _ENDINGS,
    RunState.AWAITING_APPROVAL: frozenset({RunState.PROMOTED, RunState.REJECTED}) | _ENDINGS,
    **{state: frozenset() for state in TERMINAL},
}
"""The run's state machine: from each state, the states a change may leave it in."""


class IllegalTransition(Exception):
    """A change would move a run along an edge the state machine does not have: a bug."""


class StaleRun(Exception):
    """The run moved on (cancelled, or finished elsewhere) before this change applied."""


def check_transition(run_id: str, before: RunState, after: RunState) -> None:
    if after not in NEXT_STATES[before]:
        raise IllegalTransition(f"run {run_id} cannot go from {before.label} to {after.label}")
