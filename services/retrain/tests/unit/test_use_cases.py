"""The retrain trigger's use cases against in-memory fakes: no broker, no database,
milliseconds."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import pytest

from flywheel_common.errors import FailedPrecondition, InvalidArgument, NotFound
from flywheel_retrain.domain import (
    DEFAULT_MIN_ROWS,
    Alert,
    ApprovalMode,
    CandidateGated,
    CandidateOutcome,
    DecayMetric,
    DecayTrigger,
    ExecutorConfig,
    ExecutorKind,
    FailureStage,
    FollowUpTrigger,
    Policy,
    RetrainFailed,
    RetrainRequested,
    RetrainStarted,
    RetrainSucceeded,
    RunState,
    Severity,
    StoredWindow,
)
from flywheel_retrain.handlers import policies, queries, runs, starts
from flywheel_retrain.handlers.advance import advance
from flywheel_retrain.handlers.ports import DataNotReady
from flywheel_testing.fakes import T0

from .fakes import World, world


def alert(alert_id: str = "a1", severity: Severity = Severity.HIGH) -> Alert:
    return Alert(alert_id, "iris", 1, severity, frozenset({"data"}), 3)


async def queued_run(w: World) -> str:
    run, replayed = await starts.trigger_run(w.deps, "iris", "refresh", "k1", False)
    assert not replayed
    return run.run_id


async def test_an_alert_queues_a_run_and_the_engine_takes_it_to_production() -> None:
    w = world()
    await starts.on_alert(w.deps, alert(), T0)
    run = w.store.only_run()
    assert run.state is RunState.QUEUED
    assert run.trigger.key == "TRIGGER_KIND_DRIFT_ALERT:a1"
    await advance(w.deps, run.run_id)
    run = w.store.only_run()
    assert run.state is RunState.PROMOTED
    assert run.candidate_version == 2
    assert w.registry.production_of["iris"] == 2
    assert run.finished_at == T0
    assert [type(e) for e in w.store.events] == [
        RetrainRequested,
        RetrainStarted,
        RetrainSucceeded,
        CandidateGated,
    ]
    [gated] = w.store.of_type(CandidateGated)
    assert isinstance(gated, CandidateGated)
    assert gated.outcome is CandidateOutcome.PROMOTED
    assert gated.production_version == 1


def concept_alert(began: datetime, alert_id: str = "c1", version: int = 1) -> Alert:
    return Alert(
        alert_id, "iris", version, Severity.HIGH, frozenset({"concept"}), 0, change_began_at=began
    )


async def test_a_concept_drift_run_waits_for_rows_since_the_change_then_learns_from_them() -> None:
    w = world()
    began = T0 - timedelta(minutes=5)
    w.data.rows = 300  # the alert comes a few hundred labels after the change
    await starts.on_alert(w.deps, concept_alert(began), T0)
    run_id = w.store.only_run().run_id
    with pytest.raises(DataNotReady):
        await advance(w.deps, run_id)
    assert w.store.only_run().state is RunState.PREPARING_DATA
    assert w.data.waits == [DEFAULT_MIN_ROWS]
    assert w.registry.production_of["iris"] == 1

    w.data.rows = DEFAULT_MIN_ROWS
    w.clock.advance(30)
    await advance(w.deps, run_id)
    run = w.store.only_run()
    assert run.state is RunState.PROMOTED
    assert run.dataset is not None
    assert (run.dataset.window_start, run.dataset.logged_row_count) == (began, DEFAULT_MIN_ROWS)


async def test_a_run_waiting_for_rows_trains_on_what_there_is_after_the_policy_s_wait() -> None:
    w = world()
    w.data.rows = 300
    await starts.on_alert(w.deps, concept_alert(T0), T0)
    run_id = w.store.only_run().run_id
    with pytest.raises(DataNotReady):
        await advance(w.deps, run_id)
    w.clock.advance(Policy.default("iris").max_wait.total_seconds())
    await advance(w.deps, run_id)
    run = w.store.only_run()
    assert run.state is RunState.PROMOTED
    assert run.dataset is not None
    assert run.dataset.logged_row_count == 300


async def test_only_a_run_trained_since_a_change_waits_for_rows() -> None:
    """A data-drift alert carries no change point: its run learns from the policy's whole
    window (and the production version's data) at once."""
    w = world()
    w.data.rows = 300
    await starts.on_alert(w.deps, alert(), T0)
    await advance(w.deps, w.store.only_run().run_id)
    run = w.store.only_run()
    assert run.state is RunState.PROMOTED
    assert run.dataset is not None
    assert run.dataset.window_start == T0 - timedelta(days=7)
    assert w.data.waits == []


async def test_a_change_detected_during_a_run_queues_one_run_behind_it() -> None:
    """The run in progress learns data from before the new change: one run waits behind it
    (a second alert adds none) and starts once it ends, on the version it promoted."""
    w = world()
    w.data.rows = DEFAULT_MIN_ROWS
    no_cooldown = replace(Policy.default("iris"), cooldown=timedelta(0))
    await policies.set_policy(w.deps, no_cooldown, None)
    await starts.on_alert(w.deps, alert("first"), T0)
    [first] = w.store.runs
    w.clock.advance(30)
    for name in ("second", "third"):
        await starts.on_alert(w.deps, concept_alert(T0 + timedelta(seconds=20), name), w.clock())
    assert len(w.store.runs) == 2
    behind = next(r for r in w.store.runs.values() if r.run_id != first)
    assert behind.trigger.source_id == "second"
    queued, _ = await queries.runs_to_execute(w.deps)
    assert queued == [first]

    await advance(w.deps, first)
    assert w.registry.production_of["iris"] == 2
    queued, _ = await queries.runs_to_execute(w.deps)
    assert queued == [behind.run_id]
    await advance(w.deps, behind.run_id)
    assert w.store.runs[behind.run_id].state is RunState.PROMOTED
    assert w.registry.production_of["iris"] == 3


async def test_an_alert_on_a_version_no_longer_in_production_starts_nothing() -> None:
    w = world()
    w.registry.register("iris", 2)
    w.registry.production_of["iris"] = 2
    await starts.on_alert(w.deps, alert(), T0)  # about version 1
    assert not w.store.runs


async def test_the_same_alert_twice_or_a_burst_of_alerts_yields_one_run() -> None:
    w = world()
    for n in range(5):
        await starts.on_alert(w.deps, alert(), T0)
        await starts.on_alert(w.deps, alert(f"burst-{n}"), T0)
    assert len(w.store.runs) == 1
    assert len(w.store.of_type(RetrainRequested)) == 1


async def test_alerts_below_the_policy_start_nothing() -> None:
    w = world()
    await starts.on_alert(w.deps, alert(severity=Severity.LOW), T0)
    assert not w.store.runs


async def test_a_model_without_production_or_entrypoint_starts_nothing() -> None:
    w = world()
    with pytest.raises(FailedPrecondition, match="'nope' has no production version"):
        await starts.trigger_run(w.deps, "nope", "", "", False)
    w.registry.register("iris", 1, entrypoint="")
    with pytest.raises(FailedPrecondition, match="no training entrypoint"):
        await starts.trigger_run(w.deps, "iris", "", "", False)


async def test_a_manual_run_replays_for_its_idempotency_key_and_respects_the_cooldown() -> None:
    w = world()
    run_id = await queued_run(w)
    again, replayed = await starts.trigger_run(w.deps, "iris", "refresh", "k1", False)
    assert (again.run_id, replayed) == (run_id, True)
    with pytest.raises(FailedPrecondition, match="run\\(s\\) in progress"):
        await starts.trigger_run(w.deps, "iris", "", "k2", False)
    await advance(w.deps, run_id)
    with pytest.raises(FailedPrecondition, match="cooling down"):
        await starts.trigger_run(w.deps, "iris", "", "k3", False)
    w.clock.advance(3601)
    run, replayed = await starts.trigger_run(w.deps, "iris", "", "k3", False)
    assert not replayed
    assert run.run_id != run_id


async def test_decay_over_consecutive_windows_starts_one_run() -> None:
    w = world()
    decay = DecayTrigger(True, DecayMetric.ACCURACY, 0.9, 2, 10)
    await policies.set_policy(w.deps, replace(Policy.default("iris"), decay_trigger=decay), None)

    async def window(n: int, accuracy: float) -> None:
        end = T0 + timedelta(minutes=n)
        stored = StoredWindow("iris", 1, f"w{n}", end, 100, accuracy=accuracy)
        await starts.on_window(w.deps, stored, "retrain.model-metrics", f"event-{n}")

    await window(1, 0.8)
    assert not w.store.runs
    await window(2, 0.7)
    await window(2, 0.7)  # redelivered: stored once, finds its run
    run = w.store.only_run()
    assert run.trigger.key == "TRIGGER_KIND_METRIC_DECAY:w2"
    assert len(w.store.windows) == 2


async def test_a_promoted_version_falling_below_its_gate_is_retrained_on_the_data_since() -> None:
    """The default policy watches a version a run promoted against what its gate measured
    (0.95 here), and a run learns from where the decayed windows began; a version no run
    promoted (v1, by hand) is not watched."""
    w = world()
    w.data.rows = DEFAULT_MIN_ROWS

    async def window(version: int, n: int, accuracy: float) -> None:
        stored = StoredWindow("iris", version, f"v{version}w{n}", T0 + timedelta(minutes=n),
                              500, accuracy=accuracy)  # fmt: skip
        await starts.on_window(w.deps, stored, "retrain.model-metrics", f"event-{version}-{n}")

    for n in range(3):
        await window(1, n, 0.5)
    assert not w.store.runs
    await starts.on_alert(w.deps, alert(), T0)
    await advance(w.deps, w.store.only_run().run_id)
    assert w.registry.production_of["iris"] == 2
    w.clock.advance(3601)
    await window(2, 10, 0.93)  # within 0.05 of 0.95
    await window(2, 11, 0.85)
    assert len(w.store.runs) == 1
    await window(2, 12, 0.86)
    decayed = next(r for r in w.store.runs.values() if r.trigger.source_id == "v2w12")
    assert decayed.trigger.change_began_at == T0 + timedelta(minutes=10)
    assert "from its gate's 0.95" in decayed.trigger.reason


async def test_a_version_promoted_after_its_concept_went_learns_from_its_first_windows() -> None:
    """Trained just before a change, a version is past its gate's score from its first
    window: with no window before them, the data begins after the first decayed one."""
    w = world()
    await starts.on_alert(w.deps, alert(), T0)
    await advance(w.deps, w.store.only_run().run_id)
    w.clock.advance(3601)
    for n in (1, 2):
        stored = StoredWindow("iris", 2, f"w{n}", T0 + timedelta(minutes=n), 500, accuracy=0.6)
        await starts.on_window(w.deps, stored, "retrain.model-metrics", f"event-{n}")
    decayed = next(r for r in w.store.runs.values() if r.trigger.source_id == "w2")
    assert decayed.trigger.change_began_at == T0 + timedelta(minutes=1)


async def test_estimated_accuracy_decay_starts_a_run_before_any_label_arrives() -> None:
    w = world()
    decay = DecayTrigger(True, DecayMetric.ESTIMATED_ACCURACY, 0.9, 2, 500)
    await policies.set_policy(w.deps, replace(Policy.default("iris"), decay_trigger=decay), None)

    async def window(n: int, estimate: float, predictions: int = 1000) -> None:
        end = T0 + timedelta(minutes=n)
        stored = StoredWindow(
            "iris", 1, f"w{n}", end, 0, estimated_accuracy=estimate, estimated_count=predictions
        )
        await starts.on_window(w.deps, stored, "retrain.model-metrics", f"event-{n}")

    await window(1, 0.95)
    await window(2, 0.8)
    await window(3, 0.7, predictions=100)  # too few predictions to go by: breaks nothing
    assert not w.store.runs
    await window(4, 0.8)
    run = w.store.only_run()
    assert run.trigger.key == "TRIGGER_KIND_METRIC_DECAY:w4"
    assert "estimated_accuracy" in run.trigger.reason


async def promoted_since_a_change(w: World, began: datetime) -> str:
    """A concept-drift run trained on the default 1,000 rows since `began`, promoted as v2."""
    w.data.rows = DEFAULT_MIN_ROWS
    await starts.on_alert(w.deps, concept_alert(began), T0)
    run = w.store.only_run()
    await advance(w.deps, run.run_id)
    assert w.registry.production_of["iris"] == 2
    return run.run_id


async def labelled_window(w: World, version: int, n: int, labeled: int) -> None:
    """A window of `version` ending n minutes after T0, at the gate's accuracy (no decay)."""
    end = T0 + timedelta(minutes=n)
    stored = StoredWindow("iris", version, f"v{version}w{n}", end, labeled, accuracy=0.95)
    await starts.on_window(w.deps, stored, "retrain.model-metrics", f"event-{version}-{n}")


async def test_a_version_trained_since_a_change_is_retrained_once_four_times_its_rows_came() -> (
    None
):
    """v2 learnt from the first 1,000 rows of a new concept; once 4,000 have been labelled
    since the change, one follow-up run learns from all of them, and the gate decides."""
    w = world()
    began = T0 - timedelta(minutes=5)
    first = await promoted_since_a_change(w, began)
    w.clock.advance(3601)  # past the cooldown
    for n in range(1, 4):
        await labelled_window(w, 2, n, 1000)
    assert len(w.store.runs) == 1  # 3,000 since the change
    await labelled_window(w, 2, 4, 1000)
    await labelled_window(w, 2, 4, 1000)  # redelivered: one follow-up
    await labelled_window(w, 2, 5, 1000)
    assert len(w.store.runs) == 2
    follow_up = next(r for r in w.store.runs.values() if r.run_id != first)
    assert follow_up.trigger.key == f"TRIGGER_KIND_FOLLOW_UP:{first}"
    assert follow_up.trigger.change_began_at == began
    assert "1,000 rows since the change; 4,000 have been labelled" in follow_up.trigger.reason

    w.data.rows = 4000
    await advance(w.deps, follow_up.run_id)
    follow_up = w.store.runs[follow_up.run_id]
    assert follow_up.state is RunState.PROMOTED
    assert follow_up.dataset is not None
    assert (follow_up.dataset.window_start, follow_up.dataset.logged_row_count) == (began, 4000)
    assert w.registry.production_of["iris"] == 3

    # v3 learnt from 4,000 rows since the change: followed up at 16,000, not before.
    w.clock.advance(3601)
    for n in range(6, 16):
        await labelled_window(w, 3, n, 1000)
    assert len(w.store.runs) == 2
    await labelled_window(w, 3, 16, 1000)
    assert len(w.store.runs) == 3


async def test_a_follow_up_waits_for_the_cooldown_and_a_rejected_one_is_not_repeated() -> None:
    w = world()
    await promoted_since_a_change(w, T0 - timedelta(minutes=5))
    await labelled_window(w, 2, 1, 5000)
    assert len(w.store.runs) == 1  # cooling down: the next window looks again
    w.clock.advance(3601)
    await labelled_window(w, 2, 2, 10)
    [follow_up] = [r for r in w.store.runs.values() if r.trigger.kind.name == "FOLLOW_UP"]
    w.evaluator.candidate = 0.5
    await advance(w.deps, follow_up.run_id)
    assert w.store.runs[follow_up.run_id].state is RunState.REJECTED
    w.clock.advance(3601)
    await labelled_window(w, 2, 3, 5000)
    assert len(w.store.runs) == 2
    assert w.registry.production_of["iris"] == 2


async def test_a_follow_up_whose_version_was_replaced_while_it_waited_is_cancelled() -> None:
    """Queued behind a run for a newer change, a follow-up would learn the concept that went
    again: it ends cancelled when its turn comes, without training."""
    w = world()
    await promoted_since_a_change(w, T0 - timedelta(minutes=5))
    w.clock.advance(3601)
    await labelled_window(w, 2, 1, 5000)
    [follow_up] = [r for r in w.store.runs.values() if r.trigger.kind.name == "FOLLOW_UP"]
    w.registry.register("iris", 3)
    w.registry.production_of["iris"] = 3  # the newer change's run promoted v3 meanwhile
    attempts = len(w.training.attempts)
    await advance(w.deps, follow_up.run_id)
    cancelled = w.store.runs[follow_up.run_id]
    assert cancelled.state is RunState.CANCELLED
    assert cancelled.error.endswith("version 2, which it follows up, no longer serves "
                                    "(production is 3)")  # fmt: skip
    assert len(w.training.attempts) == attempts
    assert w.registry.production_of["iris"] == 3


async def test_only_a_serving_version_trained_since_a_change_is_followed_up() -> None:
    """A data-drift run learns from the whole window: it has nothing to follow up. A version
    replaced since is not followed up either, nor is any when the policy turns it off."""
    w = world()
    await starts.on_alert(w.deps, alert(), T0)
    await advance(w.deps, w.store.only_run().run_id)
    w.clock.advance(3601)
    await labelled_window(w, 2, 1, 100_000)
    assert len(w.store.runs) == 1

    w = world()
    await promoted_since_a_change(w, T0 - timedelta(minutes=5))
    w.registry.register("iris", 3)
    w.registry.production_of["iris"] = 3  # promoted by hand
    w.clock.advance(3601)
    await labelled_window(w, 2, 1, 100_000)
    assert len(w.store.runs) == 1

    w = world()
    await promoted_since_a_change(w, T0 - timedelta(minutes=5))
    off = replace(Policy.default("iris"), follow_up_trigger=FollowUpTrigger(enabled=False))
    await policies.set_policy(w.deps, off, None)
    w.clock.advance(3601)
    await labelled_window(w, 2, 1, 100_000)
    assert len(w.store.runs) == 1


async def test_a_failed_attempt_is_retried_then_the_run_fails_with_its_stage() -> None:
    w = world()
    w.training.failures = ["exit 1", "exit 2"]
    run_id = await queued_run(w)
    await advance(w.deps, run_id)
    run = w.store.runs[run_id]
    assert run.state is RunState.FAILED
    assert run.error == "exit 2"
    assert w.training.attempts == [1, 2]  # the default policy retries once
    failed = [e for e in w.store.of_type(RetrainFailed) if isinstance(e, RetrainFailed)]
    assert [(e.attempt, e.will_retry, e.stage) for e in failed] == [
        (1, True, FailureStage.TRAINING),
        (2, False, FailureStage.TRAINING),
    ]
    assert failed[0].log_tail == ("epoch 1", "boom")


async def test_an_executor_not_configured_here_fails_the_run_in_training() -> None:
    w = world()
    policy = replace(Policy.default("iris"), executor=ExecutorConfig(ExecutorKind.KUBERNETES))
    await policies.set_policy(w.deps, policy, None)
    run_id = await queued_run(w)
    await advance(w.deps, run_id)
    run = w.store.runs[run_id]
    assert run.state is RunState.FAILED
    assert "EXECUTOR_KIND_KUBERNETES is not configured here" in run.error


async def test_a_run_killed_in_training_resumes_from_its_stored_state() -> None:
    w = world()
    run_id = await queued_run(w)
    # What a kill -9 during attempt 1 leaves: the run TRAINING, its attempt counted.
    queued = w.store.runs[run_id]
    w.store.runs[run_id] = queued.prepare_data(T0).data_ready(
        (await w.data.prepare(queued, T0)).dataset, "/h.csv", T0
    )
    w.store.runs[run_id] = replace(w.store.runs[run_id], events=())
    await advance(w.deps, run_id)
    run = w.store.runs[run_id]
    assert run.state is RunState.PROMOTED
    assert w.training.attempts == [2]  # the interrupted attempt counts
    assert w.data.prepared == [run_id]  # the dataset is not prepared again


async def test_a_run_resumed_by_a_replica_without_its_files_prepares_them_again() -> None:
    w = world()
    run_id = await queued_run(w)
    queued = w.store.runs[run_id]
    w.store.runs[run_id] = queued.prepare_data(T0).data_ready(
        (await w.data.prepare(queued, T0)).dataset, "/h.csv", T0
    )
    w.data.lost.add(run_id)  # prepared by a replica that died with its files
    await advance(w.deps, run_id)
    run = w.store.runs[run_id]
    assert run.state is RunState.PROMOTED
    assert w.data.prepared == [run_id, run_id]
    assert w.training.attempts == [2]  # still the attempt after the interrupted one


async def test_a_run_gated_by_a_replica_without_its_holdout_prepares_it_again() -> None:
    w = world()
    run_id = await queued_run(w)
    run = w.store.runs[run_id].prepare_data(T0)
    run = run.data_ready((await w.data.prepare(run, T0)).dataset, "/h.csv", T0)
    w.registry.register("iris", 2)
    w.store.runs[run_id] = replace(run.trained(2, 1, 1.0, T0), events=())
    w.data.lost.add(run_id)
    await advance(w.deps, run_id)
    assert w.store.runs[run_id].state is RunState.PROMOTED
    assert w.data.prepared == [run_id, run_id]
    assert w.training.attempts == []  # the candidate is not trained again


async def test_a_run_killed_after_its_gate_acts_on_the_recorded_verdict() -> None:
    w = world()
    w.evaluator.candidate = 0.5  # would fail if evaluated again
    run_id = await queued_run(w)
    run = w.store.runs[run_id].prepare_data(T0)
    run = run.data_ready((await w.data.prepare(run, T0)).dataset, "/h.csv", T0)
    run = run.trained(2, 1, 1.0, T0)
    w.registry.register("iris", 2)
    passing = await type(w.evaluator)().evaluate(run, 1, T0)
    w.store.runs[run_id] = replace(run.record_gate(passing, 1, T0), events=())
    await advance(w.deps, run_id)
    assert w.store.runs[run_id].state is RunState.PROMOTED


async def test_a_candidate_awaits_sign_off_then_is_approved_or_rejected() -> None:
    w = world()
    sign_off = replace(Policy.default("iris"), approval_mode=ApprovalMode.HUMAN_SIGN_OFF)
    await policies.set_policy(w.deps, sign_off, None)
    run_id = await queued_run(w)
    await advance(w.deps, run_id)
    assert w.store.runs[run_id].state is RunState.AWAITING_APPROVAL
    assert w.registry.production_of["iris"] == 1
    approved = await runs.approve(w.deps, run_id, "looks right")
    assert approved.state is RunState.PROMOTED
    assert approved.approval is not None
    assert approved.approval.comment == "looks right"
    assert w.registry.production_of["iris"] == 2
    with pytest.raises(FailedPrecondition, match="is PROMOTED, not AWAITING_APPROVAL"):
        await runs.reject(w.deps, run_id, "too late")


async def test_a_rejected_gate_leaves_production_alone() -> None:
    w = world()
    w.evaluator.candidate = 0.5
    run_id = await queued_run(w)
    await advance(w.deps, run_id)
    run = w.store.runs[run_id]
    assert run.state is RunState.REJECTED
    assert run.error.startswith("rejected by the gate: ")
    assert w.registry.production_of["iris"] == 1


async def test_a_promotion_the_registry_refuses_fails_the_run_at_its_gate() -> None:
    w = world()
    w.registry.refusal = "PERMISSION_DENIED: the token holds reader:iris, not writer"
    run_id = await queued_run(w)
    await advance(w.deps, run_id)
    run = w.store.runs[run_id]
    assert run.state is RunState.FAILED
    assert "refused to move 'production'" in run.error
    assert "reader:iris" in run.error
    assert w.registry.production_of["iris"] == 1
    [failed] = w.store.of_type(RetrainFailed)
    assert isinstance(failed, RetrainFailed)
    assert failed.stage is FailureStage.GATING
    assert not failed.will_retry


async def test_an_approval_the_registry_refuses_leaves_the_run_awaiting_sign_off() -> None:
    w = world()
    sign_off = replace(Policy.default("iris"), approval_mode=ApprovalMode.HUMAN_SIGN_OFF)
    await policies.set_policy(w.deps, sign_off, None)
    run_id = await queued_run(w)
    await advance(w.deps, run_id)
    w.registry.refusal = "PERMISSION_DENIED: production is protected: admin only"
    with pytest.raises(FailedPrecondition, match="production is protected"):
        await runs.approve(w.deps, run_id, "ship it")
    assert w.store.runs[run_id].state is RunState.AWAITING_APPROVAL
    assert w.registry.production_of["iris"] == 1


async def test_cancelling_ends_the_run_stops_its_task_and_only_once() -> None:
    w = world()
    run_id = await queued_run(w)
    cancelled = await runs.cancel(w.deps, run_id, "wrong window")
    assert cancelled.state is RunState.CANCELLED
    assert cancelled.error == "cancelled by system: wrong window"
    assert w.pokes.stopped == [run_id]
    [failed] = w.store.of_type(RetrainFailed)
    assert isinstance(failed, RetrainFailed)
    assert failed.stage is FailureStage.CANCELLED
    with pytest.raises(FailedPrecondition, match="already CANCELLED; only unfinished runs"):
        await runs.cancel(w.deps, run_id, "")
    await advance(w.deps, run_id)  # the engine leaves a finished run alone
    assert w.store.runs[run_id].state is RunState.CANCELLED


async def test_policies_are_validated_and_versioned() -> None:
    w = world()
    policy, is_default = await policies.get_policy(w.deps, "iris")
    assert is_default
    assert policy == Policy.default("iris")
    with pytest.raises(InvalidArgument, match=r"policy\.model"):
        await policies.set_policy(w.deps, Policy.default("Bad!"), None)
    bad = replace(policy, executor=ExecutorConfig(max_retries=99))
    with pytest.raises(InvalidArgument, match="max_retries"):
        await policies.set_policy(w.deps, bad, None)
    at_once = replace(policy, follow_up_trigger=FollowUpTrigger(enabled=True, growth=1))
    with pytest.raises(
        InvalidArgument, match=r"follow_up_trigger\.growth must be 0 .* or at least 2"
    ):
        await policies.set_policy(w.deps, at_once, None)
    stored = await policies.set_policy(w.deps, policy, None)
    assert stored.revision == 1
    with pytest.raises(FailedPrecondition, match="revision 1"):
        await policies.set_policy(w.deps, policy, 0)


async def test_bad_queries_get_precise_errors() -> None:
    w = world()
    with pytest.raises(NotFound, match="no retrain run 'nope'"):
        await queries.get_run(w.deps, "nope")
    with pytest.raises(NotFound):
        await runs.approve(w.deps, "nope", "")
    with pytest.raises(InvalidArgument, match="page_token"):
        await queries.list_runs(w.deps, "", (), 0, "???")
    with pytest.raises(InvalidArgument, match="page_size"):
        await queries.list_runs(w.deps, "", (), -1, "")
    with pytest.raises(InvalidArgument, match="model is required"):
        await starts.trigger_run(w.deps, "", "", "", False)


async def test_runs_page_newest_first() -> None:
    w = world()
    ids = []
    for n in range(3):
        run, _ = await starts.trigger_run(w.deps, "iris", "", f"k{n}", False)
        ids.append(run.run_id)
        await runs.cancel(w.deps, run.run_id, "")
        w.clock.advance(3601)  # past the cooldown
    page, token = await queries.list_runs(w.deps, "iris", (RunState.CANCELLED,), 2, "")
    assert [r.run_id for r in page] == ids[::-1][:2]
    rest, end = await queries.list_runs(w.deps, "iris", (), 2, token)
    assert [r.run_id for r in rest] == ids[:1]
    assert end == ""
