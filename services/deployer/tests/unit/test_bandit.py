"""Bandit routing: Thompson sampling of the arms' weights, and the rollout that follows it."""

from datetime import timedelta

import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration

from flywheel.deployer.v1 import types_pb2 as pb
from flywheel_common.errors import InvalidArgument
from flywheel_deployer.analysis import Window
from flywheel_deployer.converters.policies import policy_of
from flywheel_deployer.domain import (
    ArmSpec,
    ArmTarget,
    BanditTerms,
    Evidence,
    Phase,
    Policy,
    Reward,
    Role,
    Rollout,
    Strategy,
    Trigger,
)
from flywheel_deployer.domain.bandit import best_arm_probabilities, even_weights, weights
from flywheel_testing.fakes import T0


def labelled(accuracy: float, labeled: int = 500, p99: float = 10.0) -> Window:
    return Window(f"w-{accuracy}-{labeled}-{p99}", labeled, 0, p99, labeled=labeled,
                  accuracy=accuracy)  # fmt: skip


def probabilities(evidence: list[Evidence], reward: Reward = Reward.ACCURACY) -> np.ndarray:
    return best_arm_probabilities(evidence, reward, np.random.default_rng(0))


def test_the_more_accurate_arm_is_almost_surely_best_once_labels_say_so() -> None:
    worse = Evidence.of([labelled(0.70)] * 4)
    better = Evidence.of([labelled(0.90)] * 4)
    assert (worse.labeled, worse.correct) == (2000, pytest.approx(1400))
    assert probabilities([worse, better]).tolist() == [0.0, 1.0]
    assert weights([0.0, 1.0], floor_percent=5) == (5, 95)


def test_without_evidence_the_arms_share_evenly_and_little_evidence_moves_little() -> None:
    assert probabilities([Evidence(), Evidence()]) == pytest.approx([0.5, 0.5], abs=0.03)
    close = probabilities([Evidence.of([labelled(0.70, 20)]), Evidence.of([labelled(0.75, 20)])])
    assert 0.2 < close[0] < 0.5 < close[1] < 0.8


def test_latency_rewards_the_faster_arm_and_explores_an_arm_without_windows() -> None:
    fast = Evidence.of([Window(f"f{i}", 100, 0, 10.0 + i % 3) for i in range(6)])
    slow = Evidence.of([Window(f"s{i}", 100, 0, 30.0 + i % 3) for i in range(6)])
    assert probabilities([slow, fast], Reward.LATENCY).tolist() == [0.0, 1.0]
    unknown = probabilities([fast, Evidence()], Reward.LATENCY)
    assert 0.2 < unknown[1] < 0.8  # sampled from what every arm showed, twice as wide


@pytest.mark.parametrize(
    ("shares", "floor"),
    [([0.5, 0.5], 5), ([0.333, 0.333, 0.334], 10), ([0.01, 0.98, 0.01], 0), ([1.0, 0.0], 50)],
)
def test_weights_are_whole_percentages_summing_to_100_above_the_floor(
    shares: list[float], floor: int
) -> None:
    split = weights(shares, floor)
    assert sum(split) == 100
    assert min(split) >= floor
    assert max(range(len(shares)), key=lambda i: split[i]) == max(
        range(len(shares)), key=lambda i: shares[i]
    )
    assert even_weights(3) == (34, 33, 33)


def bandit(floor: int = 5, interval: float = 60.0) -> Rollout:
    policy = Policy(
        model="iris",
        strategy=Strategy.BANDIT,
        sticky_key="user",
        bandit=BanditTerms(Reward.ACCURACY, floor, interval),
    )
    return Rollout.start(
        "r-bandit", "iris", 2, 1, policy, trigger=Trigger.MANUAL, actor="t", reason="", now=T0
    )


def test_a_bandit_starts_even_then_moves_traffic_to_the_better_arm_at_its_pace() -> None:
    rollout = bandit()
    assert [(arm.name, arm.version) for arm in rollout.plan.arms] == [
        ("candidate", 2),
        ("baseline", 1),
    ]
    assert rollout.needed_versions() == {1, 2}
    running = rollout.begin(T0)
    routes = running.routing().routes
    assert [(r.version, r.weight, r.role, r.arm) for r in routes] == [
        (2, 50, Role.ARM, "candidate"),
        (1, 50, Role.ARM, "baseline"),
    ]
    assert running.routing().sticky_key == "user"
    later = T0 + timedelta(seconds=600)
    assert running.rebalance([Evidence(), Evidence()], later) == running  # nothing observed
    close = [Evidence.of([labelled(0.80, 40)]), Evidence.of([labelled(0.80, 40)])]
    assert running.rebalance(close, later) == running  # within the draws' noise
    evidence = [Evidence.of([labelled(0.92)] * 3), Evidence.of([labelled(0.71)] * 3)]
    assert running.rebalance(evidence, T0 + timedelta(seconds=59)) == running  # too soon
    moved = running.rebalance(evidence, T0 + timedelta(seconds=60))
    assert moved.arm_weights == (95, 5)
    assert moved.weight == 95
    assert [r.weight for r in moved.routing().routes] == [95, 5]
    assert moved.rebalance(evidence, T0 + timedelta(seconds=200)) == moved  # nothing new
    # The same windows give the same weights, on any replica.
    assert running.rebalance(evidence, T0 + timedelta(seconds=60)) == moved
    promoted = moved.promote_now(1, T0, "operator's choice", "ops")
    assert promoted.phase is Phase.SUCCEEDED
    assert [(r.version, r.weight) for r in promoted.routing().routes] == [(1, 100)]


def test_bandit_policies_are_checked_with_what_to_fix() -> None:
    with pytest.raises(InvalidArgument, match=r"floor_percent must be in 0\.\.50 for 2 arms"):
        bandit(floor=60)
    weighted = Policy(
        model="iris",
        strategy=Strategy.BANDIT,
        bandit_arms=(
            ArmSpec("a", ArmTarget.CANDIDATE, weight=50),
            ArmSpec("b", ArmTarget.BASELINE, weight=50),
        ),
    )
    with pytest.raises(InvalidArgument, match="leave weight_percent at 0"):
        weighted.validate()
    with pytest.raises(InvalidArgument, match="targets the baseline, but the model serves no"):
        Policy(model="iris", strategy=Strategy.BANDIT).plan(candidate=1, baseline=0)
    three = Policy(
        model="iris",
        strategy=Strategy.BANDIT,
        bandit_arms=tuple(
            ArmSpec(n, ArmTarget.VERSION, v) for n, v in (("x", 1), ("y", 2), ("z", 3))
        ),
    ).plan(candidate=3, baseline=1)
    assert [arm.weight for arm in three.arms] == [34, 33, 33]


def test_a_bandit_policy_message_becomes_its_terms() -> None:
    message = pb.DeploymentPolicy(
        model="iris",
        strategy=pb.STRATEGY_BANDIT,
        bandit=pb.BanditPolicy(
            arms=[pb.AbArm(name="a", target=pb.ARM_TARGET_CANDIDATE)],
            reward=pb.BANDIT_REWARD_LATENCY,
            floor_percent=0,
            rebalance_interval=Duration(seconds=30),
        ),
    )
    policy = policy_of(message)
    assert policy.strategy is Strategy.BANDIT
    assert policy.bandit == BanditTerms(Reward.LATENCY, 0, 30.0)
    assert policy.bandit_arms == (ArmSpec("a", ArmTarget.CANDIDATE),)
    default = policy_of(pb.DeploymentPolicy(model="iris", strategy=pb.STRATEGY_BANDIT))
    assert default.bandit == BanditTerms(Reward.ACCURACY, 5, 60.0)
