"""The deployer's use cases against in-memory fakes: no broker, no database, milliseconds."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from flywheel_common.errors import FailedPrecondition, InvalidArgument, NotFound
from flywheel_deployer.analysis import InsufficientData, StepRule, Thresholds, Window
from flywheel_deployer.domain import (
    ArmSpec,
    ArmTarget,
    MetricWindow,
    Phase,
    Policy,
    Role,
    RolloutAborted,
    RolloutCompleted,
    RolloutRolledBack,
    RolloutStarted,
    RolloutStepAdvanced,
    Route,
    Strategy,
    Trigger,
)
from flywheel_deployer.handlers import operator, policies, queries
from flywheel_deployer.handlers.reconcile import reconcile, record_window
from flywheel_deployer.handlers.rollouts import (
    Promotion,
    StartRollout,
    follow_promotion,
    start_rollout,
)

from .fakes import World, world

CANARY = Policy(
    model="iris",
    strategy=Strategy.CANARY,
    auto_rollout_on_promotion=True,
    canary_steps=(10, 50, 100),
    canary_rule=StepRule(min_seconds=60, min_requests=100),
    thresholds=Thresholds(max_error_rate=0.05),
)


async def serving(w: World, version: int) -> None:
    """`version` serves all traffic, through a direct rollout."""
    started = await start_rollout(w.deps, StartRollout("iris", version, Strategy.DIRECT))
    await reconcile(w.deps)
    assert w.store.rollouts[started.rollout.rollout_id].phase is Phase.SUCCEEDED
    w.store.events.clear()
    w.store.published.clear()


async def window(w: World, version: int, requests: int, errors: int = 0) -> None:
    summary = Window(f"w-{uuid.uuid4().hex[:6]}", requests, errors, 10.0)
    await record_window(
        w.deps,
        MetricWindow("iris", version, w.clock.now, w.clock.now, summary),
        "c",
        summary.window_id,
    )


def routes(w: World) -> tuple[Route, ...]:
    return w.store.states["iris"].routing.routes


async def canary_at_first_step(w: World) -> str:
    await serving(w, 1)
    await policies.set_policy(w.deps, CANARY, None)
    started = await start_rollout(w.deps, StartRollout("iris", 2))
    await reconcile(w.deps)
    return started.rollout.rollout_id


async def test_a_first_direct_rollout_loads_then_takes_all_traffic() -> None:
    w = world()
    started = await start_rollout(w.deps, StartRollout("iris", 1))
    assert started.rollout.phase is Phase.PENDING
    assert routes(w) == (Route(1, 0, Role.CANARY),)
    await reconcile(w.deps)
    rollout = w.store.rollouts[started.rollout.rollout_id]
    assert rollout.phase is Phase.SUCCEEDED
    assert routes(w) == (Route(1, 100),)
    assert [type(e) for e in w.store.events] == [RolloutStarted, RolloutCompleted]
    assert [s.generation for s in w.store.published] == [1, 2]


async def test_a_pending_rollout_waits_for_gateways_then_rolls_back_after_the_timeout() -> None:
    w = world()
    await serving(w, 1)
    w.fleet.waiting["iris"] = ["gw-a"]
    started = await start_rollout(w.deps, StartRollout("iris", 2))
    await reconcile(w.deps)
    assert w.store.rollouts[started.rollout.rollout_id].phase is Phase.PENDING
    assert (await queries.get_rollout(w.deps, started.rollout.rollout_id)).pending_gateways == (
        "gw-a",
    )
    w.clock.advance(301)
    await reconcile(w.deps)
    rollout = w.store.rollouts[started.rollout.rollout_id]
    assert rollout.phase is Phase.ROLLED_BACK
    assert "gw-a did not report version 2 ready within 300s" in rollout.end_reason
    assert routes(w) == (Route(1, 100),)


async def test_a_canary_advances_on_good_windows_and_completes() -> None:
    w = world()
    rollout_id = await canary_at_first_step(w)
    assert routes(w) == (Route(1, 90), Route(2, 10, Role.CANARY))
    weights = []
    for _ in range(3):
        w.clock.advance(61)
        await window(w, 1, 500, errors=2)
        await window(w, 2, 150, errors=1)
        await reconcile(w.deps)
        weights.append(w.store.rollouts[rollout_id].weight)
    assert weights == [50, 100, 100]
    rollout = w.store.rollouts[rollout_id]
    assert rollout.phase is Phase.SUCCEEDED
    assert routes(w) == (Route(2, 100),)
    advanced = w.store.of_type(RolloutStepAdvanced)
    assert [(e.from_weight, e.to_weight) for e in advanced] == [(0, 10), (10, 50), (50, 100)]
    assert all(e.analysis is not None for e in advanced[1:])
    [completed] = w.store.of_type(RolloutCompleted)
    assert completed.analysis is not None
    assert not completed.forced
    assert [s.index for s in rollout.steps] == [0, 1, 2]
    assert all(s.finished_at is not None and s.analysis is not None for s in rollout.steps)


async def test_a_canary_rolls_back_on_bad_windows() -> None:
    w = world()
    rollout_id = await canary_at_first_step(w)
    await window(w, 1, 500)
    await window(w, 2, 120, errors=30)
    await reconcile(w.deps)
    rollout = w.store.rollouts[rollout_id]
    assert rollout.phase is Phase.ROLLED_BACK
    assert rollout.end_reason.startswith("error_rate 0.25 > 0.05")
    assert routes(w) == (Route(1, 100),)
    [rolled_back] = w.store.of_type(RolloutRolledBack)
    assert isinstance(rolled_back, RolloutRolledBack)
    assert (rolled_back.rolled_back_version, rolled_back.restored_version) == (2, 1)
    assert rolled_back.automatic
    assert rolled_back.analysis is not None
    assert rollout.last_analysis == rolled_back.analysis == rollout.steps[-1].analysis


async def test_a_starved_step_pauses_when_the_policy_says_so() -> None:
    w = world()
    await serving(w, 1)
    rule = StepRule(60, 100, max_seconds=120, on_insufficient_data=InsufficientData.PAUSE)
    await policies.set_policy(w.deps, Policy("iris", Strategy.CANARY, canary_rule=rule), None)
    started = await start_rollout(w.deps, StartRollout("iris", 2))
    await reconcile(w.deps)
    w.clock.advance(130)
    await reconcile(w.deps)
    rollout = w.store.rollouts[started.rollout.rollout_id]
    assert rollout.phase is Phase.PAUSED
    assert rollout.last_analysis is not None


async def test_a_second_rollout_supersedes_only_when_asked() -> None:
    w = world()
    first = await canary_at_first_step(w)
    with pytest.raises(FailedPrecondition, match="set supersede"):
        await start_rollout(w.deps, StartRollout("iris", 3))
    second = await start_rollout(w.deps, StartRollout("iris", 3, supersede=True))
    old = w.store.rollouts[first]
    assert (old.phase, old.superseded_by) == (Phase.SUPERSEDED, second.rollout.rollout_id)
    assert second.rollout.baseline == 1
    aborted, started = w.store.events[-2:]
    assert isinstance(aborted, RolloutAborted)
    assert aborted.superseded
    assert aborted.reason == "superseded by a rollout of version 3"
    assert isinstance(started, RolloutStarted)
    assert started.superseded_rollout_id == first


async def test_a_paused_rollout_holds_until_resumed_and_its_step_clock_restarts() -> None:
    w = world()
    rollout_id = await canary_at_first_step(w)
    paused = await operator.pause(w.deps, rollout_id, "")
    assert paused.rollout.phase is Phase.PAUSED
    assert paused.rollout.end_reason == "paused by system"
    w.clock.advance(61)
    await window(w, 2, 150)
    await reconcile(w.deps)
    assert w.store.rollouts[rollout_id].phase is Phase.PAUSED
    resumed = await operator.resume(w.deps, rollout_id)
    assert resumed.rollout.phase is Phase.PROGRESSING
    assert resumed.rollout.step_started_at == w.clock.now
    with pytest.raises(FailedPrecondition, match="only a paused rollout can resume"):
        await operator.resume(w.deps, rollout_id)


async def test_an_abort_restores_the_baseline_once() -> None:
    w = world()
    rollout_id = await canary_at_first_step(w)
    aborted = await operator.abort(w.deps, rollout_id, "")
    assert aborted.rollout.phase is Phase.ABORTED
    assert routes(w) == (Route(1, 100),)
    event = w.store.events[-1]
    assert isinstance(event, RolloutAborted)
    assert (event.restored_version, event.superseded, event.reason) == (
        1,
        False,
        "aborted by system",
    )
    with pytest.raises(FailedPrecondition, match="cannot be aborted"):
        await operator.abort(w.deps, rollout_id, "")
    with pytest.raises(NotFound):
        await operator.abort(w.deps, "nope", "")


async def test_promote_now_hands_an_ab_test_to_the_winning_arm() -> None:
    w = world()
    await serving(w, 1)
    arms = (
        ArmSpec("control", ArmTarget.BASELINE, weight=50),
        ArmSpec("treatment", ArmTarget.CANDIDATE, weight=50),
    )
    started = await start_rollout(
        w.deps,
        StartRollout("iris", 2, policy_override=Policy("iris", Strategy.AB, arms=arms)),
    )
    await reconcile(w.deps)
    with pytest.raises(InvalidArgument, match="choose one of 1, 2"):
        await operator.promote_now(w.deps, started.rollout.rollout_id, 4, "")
    promoted = await operator.promote_now(w.deps, started.rollout.rollout_id, 1, "control wins")
    assert (promoted.rollout.phase, promoted.rollout.promoted_version) == (Phase.SUCCEEDED, 1)
    assert routes(w) == (Route(1, 100),)
    completed = w.store.events[-1]
    assert isinstance(completed, RolloutCompleted)
    assert completed.forced
    assert (completed.version, completed.actor) == (1, "system")


async def test_an_operator_rollback_succeeds_at_once_and_names_what_it_replaced() -> None:
    w = world()
    await serving(w, 1)
    await serving(w, 2)
    with pytest.raises(FailedPrecondition, match="already serves version 2"):
        await operator.rollback(w.deps, "iris", 2, "")
    rolled_back = await operator.rollback(w.deps, "iris", 1, "bad labels")
    rollout = rolled_back.rollout
    assert (rollout.phase, rollout.trigger, rollout.baseline) == (
        Phase.SUCCEEDED,
        Trigger.ROLLBACK,
        2,
    )
    assert routes(w) == (Route(1, 100),)
    [event] = w.store.events
    assert isinstance(event, RolloutRolledBack)
    assert not event.automatic
    assert (event.rolled_back_version, event.restored_version, event.reason) == (2, 1, "bad labels")
    w.registry.servable.add(("other", 1))
    with pytest.raises(FailedPrecondition, match="not deployed"):
        await operator.rollback(w.deps, "other", 1, "")


async def test_a_redelivered_promotion_returns_the_rollout_it_started() -> None:
    w = world()
    await serving(w, 1)
    promotion = Promotion("iris", 2, to_production=True, by_rollback=False, actor="alice")
    await follow_promotion(w.deps, promotion, "event-1")
    [first] = [r for r in w.store.rollouts.values() if r.version == 2]
    assert (first.trigger, first.reason) == (Trigger.PROMOTION, "promoted to production by alice")
    await operator.abort(w.deps, first.rollout_id, "")
    await follow_promotion(w.deps, promotion, "event-1")
    assert [r.rollout_id for r in w.store.rollouts.values() if r.version == 2] == [first.rollout_id]
    await follow_promotion(w.deps, Promotion("iris", 3, True, by_rollback=True), "event-2")
    await follow_promotion(w.deps, Promotion("iris", 3, False, False), "event-3")
    assert all(r.version != 3 for r in w.store.rollouts.values())


async def test_policies_change_by_compare_and_set_and_invalid_ones_store_nothing() -> None:
    w = world()
    policy, is_default = await policies.get_policy(w.deps, "iris")
    assert is_default
    assert policy.strategy is Strategy.DIRECT
    assert policy.auto_rollout_on_promotion
    first = await policies.set_policy(w.deps, CANARY, None)
    second = await policies.set_policy(w.deps, CANARY, expected_revision=1)
    assert (first.revision, second.revision) == (1, 2)
    with pytest.raises(FailedPrecondition, match="revision 2"):
        await policies.set_policy(w.deps, CANARY, expected_revision=1)
    uneven = Policy(
        "other",
        Strategy.AB,
        arms=(
            ArmSpec("a", ArmTarget.CANDIDATE, weight=60),
            ArmSpec("b", ArmTarget.BASELINE, weight=30),
        ),
    )
    with pytest.raises(InvalidArgument, match="sum to 100"):
        await policies.set_policy(w.deps, uneven, None)
    assert (await policies.get_policy(w.deps, "other"))[1]


async def test_a_failed_use_case_commits_nothing() -> None:
    w = world()
    with pytest.raises(FailedPrecondition, match="shadow rollout needs a version serving"):
        await start_rollout(w.deps, StartRollout("iris", 1, Strategy.SHADOW))
    with pytest.raises(NotFound):
        await start_rollout(w.deps, StartRollout("iris", 9))
    assert not w.store.rollouts
    assert not w.store.events
    assert not w.store.published


async def test_windows_are_kept_once_per_event_and_listing_pages_newest_first() -> None:
    w = world()
    summary = Window("w1", 10, 0, 5.0)
    kept = MetricWindow("iris", 1, w.clock.now, w.clock.now, summary)
    await record_window(w.deps, kept, "c", "event-1")
    await record_window(w.deps, kept, "c", "event-1")
    assert len(w.store.windows) == 1
    for version in (1, 2, 3):
        await serving(w, version)
        w.clock.now += timedelta(seconds=1)
    page, token = await queries.list_rollouts(w.deps, "iris", None, 2, "")
    assert [v.rollout.version for v in page] == [3, 2]
    assert token == "2"
    rest, token = await queries.list_rollouts(w.deps, "iris", (Phase.SUCCEEDED,), 2, token)
    assert [v.rollout.version for v in rest] == [1]
    assert token == ""
    with pytest.raises(InvalidArgument):
        await queries.list_rollouts(w.deps, "iris", None, -1, "")
    state = await queries.deployment_state(w.deps, "iris")
    assert state.state.routing.serving_version == 3
    assert state.active is None


@pytest.mark.parametrize("model", ["-1", "*", "Iris", "../iris", ""])
async def test_rollouts_of_invalid_model_names_are_refused_before_asking_the_registry(
    model: str,
) -> None:
    w = world()
    with pytest.raises(InvalidArgument, match="is not a valid name"):
        await start_rollout(w.deps, StartRollout(model, 1))
    with pytest.raises(InvalidArgument, match="is not a valid name"):
        await operator.rollback(w.deps, model, 1, "")
    assert not w.store.rollouts


@pytest.mark.parametrize("token", ["99999999999999999999", "-1", "2147483648", "x"])
async def test_page_tokens_past_any_issued_are_refused(token: str) -> None:
    with pytest.raises(InvalidArgument, match="page_token is not one this server issued"):
        await queries.list_rollouts(world().deps, "iris", None, 10, token)
