"""Protobuf and stored JSON in and out of the domain without losing anything."""

from __future__ import annotations

from dataclasses import replace

import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from flywheel.deployer.v1 import types_pb2 as pb
from flywheel_common.errors import InvalidArgument
from flywheel_common.timestamps import duration
from flywheel_deployer import converters
from flywheel_deployer.analysis import Check, Decision, InsufficientData, Metric, Outcome, StepRule
from flywheel_deployer.domain import (
    AnalysisResult,
    ArmSpec,
    ArmTarget,
    Policy,
    Role,
    Route,
    Routing,
    RoutingState,
    Step,
    Strategy,
    VersionPolicy,
    VersionPolicyKind,
)
from flywheel_testing.fakes import T0


def test_a_stored_policy_comes_back_as_it_was_stored() -> None:
    stored = pb.DeploymentPolicy(
        model="iris",
        strategy=pb.STRATEGY_CANARY,
        canary=pb.CanaryPolicy(
            steps_percent=[5, 50, 100],
            min_step_duration=duration(30),
            max_step_duration=duration(600),
            on_insufficient_data=pb.INSUFFICIENT_DATA_ACTION_PAUSE,
        ),
        analysis=pb.AnalysisThresholds(max_error_rate=0.01),
        gateway_version_policy=pb.GatewayVersionPolicy(
            kind=pb.GATEWAY_VERSION_POLICY_KIND_LATEST, latest_n=2
        ),
        revision=3,
        updated_by="alice",
    )
    policy = converters.policy_from_document(converters.to_json(stored))
    assert converters.policy_message(policy) == stored
    plan = policy.plan(candidate=2, baseline=1)
    assert plan.steps == (5, 50, 100)
    assert plan.rule == StepRule(30, 0, 600, InsufficientData.PAUSE)
    assert plan.version_policy == VersionPolicy(VersionPolicyKind.LATEST, 2)
    overridden = converters.policy_message(policy.with_strategy(Strategy.DIRECT))
    assert overridden.strategy == pb.STRATEGY_DIRECT


def test_a_policy_built_in_the_domain_keeps_every_term() -> None:
    policy = Policy(
        "iris",
        Strategy.AB,
        auto_rollout_on_promotion=True,
        arms=(ArmSpec("a", ArmTarget.CANDIDATE, weight=50), ArmSpec("b", ArmTarget.VERSION, 1, 50)),
        canary_rule=StepRule(10, 20, 30, InsufficientData.ROLLBACK),
        gateway_ready_timeout_seconds=45.0,
        sticky_key="user",
    )
    back = converters.policy_of(converters.policy_message(policy))
    assert replace(back, document=None) == policy
    default = converters.policy_message(Policy.default("iris"))
    assert default == pb.DeploymentPolicy(
        model="iris", strategy=pb.STRATEGY_DIRECT, auto_rollout_on_promotion=True
    )


def test_steps_analyses_and_routing_states_round_trip() -> None:
    result = AnalysisResult(
        Decision.ADVANCE,
        (Check(Metric.ERROR_RATE, 0.01, 0.05, 0.01, 0.02, Outcome.PASSED),),
        2, 1, 150, 500, ("w1", "w2"), 0, 10, "all checks passed", T0,
    )  # fmt: skip
    steps = (Step(0, 10, T0, T0, result), Step(1, 50, T0))
    documents = converters.steps_document(steps)
    assert converters.steps_from_document(documents) == steps
    assert converters.analysis_from_document(converters.analysis_document(result)) == result
    state = RoutingState(
        "iris",
        Routing((Route(1, 90), Route(2, 10, Role.CANARY)), "user", 3, 50),
        Strategy.CANARY,
        7,
        "r1",
        T0,
        VersionPolicy(VersionPolicyKind.SPECIFIC, versions=(1, 2)),
    )
    assert converters.state_of(converters.state_message(state)) == state


@pytest.mark.parametrize(
    ("message", "fragment"),
    [
        (
            pb.DeploymentPolicy(model="m", gateway_ready_timeout=Duration(nanos=2_147_483_647)),
            "gateway_ready_timeout.nanos is 2147483647",
        ),
        (
            pb.DeploymentPolicy(
                model="m", canary=pb.CanaryPolicy(min_step_duration=Duration(seconds=2**62))
            ),
            "canary.min_step_duration.seconds is 4611686018427387904",
        ),
        (
            pb.DeploymentPolicy(model="m", updated_at=Timestamp(nanos=-(2**31))),
            "updated_at.nanos is -2147483648",
        ),
    ],
)
def test_out_of_range_times_in_a_policy_are_invalid_arguments(
    message: pb.DeploymentPolicy, fragment: str
) -> None:
    with pytest.raises(InvalidArgument, match=fragment):
        converters.policy_of(message)


@pytest.mark.parametrize("model", ["-1", "*", "", "../x", "Iris"])
def test_a_policy_for_an_invalid_model_name_is_refused(model: str) -> None:
    with pytest.raises(InvalidArgument, match="is not a valid name"):
        converters.policy_of(pb.DeploymentPolicy(model=model)).validate()
