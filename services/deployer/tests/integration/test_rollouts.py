"""Rollouts end to end: registry promotions, deployer decisions, gateways serving real models."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from flywheel.deployer.v1 import deployer_pb2 as api
from flywheel.deployer.v1 import types_pb2 as types
from flywheel.registry.v1 import registry_pb2 as registry_pb
from flywheel_common.timestamps import duration
from flywheel_testing.models import IrisModels
from flywheel_testing.tls import secure_channel
from flywheel_testing.waiting import eventually
from inference import grpc_service_pb2_grpc as inference_grpc

from .conftest import Platform, Services, platform_on


def canary_policy(model: str, **analysis: float) -> types.DeploymentPolicy:
    return types.DeploymentPolicy(
        model=model,
        strategy=types.STRATEGY_CANARY,
        canary=types.CanaryPolicy(
            steps_percent=[10, 50, 100], min_step_duration=duration(0.5), min_request_count=40
        ),
        analysis=types.AnalysisThresholds(**analysis),
        auto_rollout_on_promotion=True,
    )


@pytest.fixture
async def platform(
    shared_services: Services, iris_models: IrisModels, kafka_bootstrap: str
) -> AsyncIterator[Platform]:
    """The module's services, with a model of the test's own."""
    async with platform_on(shared_services, iris_models, kafka_bootstrap) as running:
        yield running


async def started_rollout(platform: Platform, version: int, timeout: float = 30.0) -> str:
    """The id of the rollout of `version` once the deployer announced it."""

    def matching() -> list[Any]:
        return [e for e in platform.of_type("RolloutStarted") if e.version == version]

    async def started() -> bool:
        return bool(matching())

    await eventually(started, timeout)
    return str(matching()[-1].rollout_id)


async def feed_windows(
    platform: Platform, rollout_id: str, baseline: int, candidate: int, **candidate_window: Any
) -> Any:
    """Publish per-version windows, as the drift detector would, until the rollout ends."""
    while True:
        rollout = await platform.rollout(rollout_id)
        if rollout.phase not in (
            types.ROLLOUT_PHASE_PENDING,
            types.ROLLOUT_PHASE_PROGRESSING,
        ):
            return rollout
        if rollout.phase == types.ROLLOUT_PHASE_PROGRESSING:
            await platform.publish_window(baseline, 200, errors=1, p99_ms=10.0)
            await platform.publish_window(candidate, 50, **candidate_window)
        await asyncio.sleep(0.3)


async def test_a_promotion_walks_a_canary_through_every_step(
    platform: Platform,
) -> None:
    v1 = await platform.register(platform.iris.classifier)
    v2 = await platform.register(platform.iris.retrained)
    await platform.api.SetDeploymentPolicy(
        api.SetDeploymentPolicyRequest(
            policy=canary_policy(platform.model, max_error_rate=0.05, max_latency_p99_ratio=2.0)
        )
    )
    await platform.deploy_first(v1)
    platform.events.clear()
    traffic = platform.traffic()
    load = asyncio.create_task(traffic.run())

    await platform.promote(v2)
    rollout_id = await started_rollout(platform, v2)
    async with asyncio.timeout(120):
        rollout = await feed_windows(platform, rollout_id, v1, v2, errors=0, p99_ms=11.0)
    await platform.wait_serving({v2})
    traffic.stop()
    await load

    async def completion_announced() -> bool:
        return bool(platform.of_type("RolloutCompleted"))

    await eventually(completion_announced)
    assert rollout.phase == types.ROLLOUT_PHASE_SUCCEEDED, rollout.end_reason
    assert rollout.trigger == types.ROLLOUT_TRIGGER_PROMOTION
    assert (rollout.version, rollout.baseline_version) == (v2, v1)
    steps = platform.of_type("RolloutStepAdvanced")
    assert [(s.from_step_index, s.to_step_index, s.to_weight_percent) for s in steps] == [
        (-1, 0, 10),
        (0, 1, 50),
        (1, 2, 100),
    ]
    for step in steps[1:]:
        assert step.analysis.decision == types.ANALYSIS_DECISION_ADVANCE
        assert step.analysis.candidate_request_count >= 40
        assert {c.outcome for c in step.analysis.checks} == {types.CHECK_OUTCOME_PASSED}
    [completed] = platform.of_type("RolloutCompleted")
    assert completed.analysis.decision == types.ANALYSIS_DECISION_PROMOTE
    assert [w.weight_percent for w in rollout.steps] == [10, 50, 100]
    assert traffic.failures == []
    assert traffic.served[v1] > 0
    assert traffic.served[v2] > 0


@pytest.mark.parametrize(
    ("bad_window", "metric", "expected"),
    [
        ({"errors": 10, "p99_ms": 10.0}, types.ANALYSIS_METRIC_ERROR_RATE, "error_rate"),
        ({"errors": 0, "p99_ms": 45.0}, types.ANALYSIS_METRIC_LATENCY_P99_RATIO, "latency"),
    ],
    ids=["errors", "slower"],
)
async def test_a_bad_candidate_is_rolled_back_and_production_restored(
    platform: Platform, bad_window: dict[str, Any], metric: int, expected: str
) -> None:
    v1 = await platform.register(platform.iris.classifier)
    v2 = await platform.register(platform.iris.retrained)
    await platform.api.SetDeploymentPolicy(
        api.SetDeploymentPolicyRequest(
            policy=canary_policy(platform.model, max_error_rate=0.05, max_latency_p99_ratio=2.0)
        )
    )
    await platform.promote(v1)
    first = await started_rollout(platform, v1)
    await platform.wait_phase(first, types.ROLLOUT_PHASE_SUCCEEDED)
    await platform.wait_serving({v1})
    platform.events.clear()
    traffic = platform.traffic()
    load = asyncio.create_task(traffic.run())

    await platform.promote(v2)
    rollout_id = await started_rollout(platform, v2)
    async with asyncio.timeout(120):
        rollout = await feed_windows(platform, rollout_id, v1, v2, **bad_window)
    await platform.wait_serving({v1})

    async def rollback_announced() -> bool:
        return await platform.production() == v1 and bool(platform.of_type("RolloutRolledBack"))

    await eventually(rollback_announced)
    traffic.stop()
    await load

    assert rollout.phase == types.ROLLOUT_PHASE_ROLLED_BACK
    assert expected in rollout.end_reason
    [rolled_back] = platform.of_type("RolloutRolledBack")
    assert rolled_back.automatic
    assert (rolled_back.rolled_back_version, rolled_back.restored_version) == (v2, v1)
    assert rolled_back.analysis.decision == types.ANALYSIS_DECISION_ROLLBACK
    failed = [c for c in rolled_back.analysis.checks if c.outcome == types.CHECK_OUTCOME_FAILED]
    assert [c.metric for c in failed] == [metric]
    assert failed[0].observed > failed[0].threshold
    assert traffic.failures == []
    history = await platform.registry_api.GetAliasHistory(
        registry_pb.GetAliasHistoryRequest(model=platform.model, alias="production")
    )
    assert rollout_id in str(history)


AB_KEYS = 4_000


async def test_ab_arms_hold_their_weights_and_sticky_keys_never_switch(
    platform: Platform,
) -> None:
    v1 = await platform.register(platform.iris.classifier)
    v2 = await platform.register(platform.iris.retrained)
    await platform.deploy_first(v1)
    policy = types.DeploymentPolicy(
        model=platform.model,
        strategy=types.STRATEGY_AB,
        sticky_key="user",
        ab=types.AbPolicy(
            arms=[
                types.AbArm(name="control", target=types.ARM_TARGET_BASELINE, weight_percent=70),
                types.AbArm(name="treatment", target=types.ARM_TARGET_CANDIDATE, weight_percent=30),
            ]
        ),
    )
    response = await platform.api.StartRollout(
        api.StartRolloutRequest(model=platform.model, version=v2, policy_override=policy)
    )
    rollout = await platform.wait_phase(
        response.rollout.rollout_id, types.ROLLOUT_PHASE_PROGRESSING
    )

    async def step_announced() -> bool:
        # The phase is read from the deployer's API; the event reaches the test's consumer
        # through Kafka, later under load.
        return bool(platform.of_type("RolloutStepAdvanced"))

    await eventually(step_announced)
    assert [
        (s.from_step_index, s.to_step_index) for s in platform.of_type("RolloutStepAdvanced")
    ] == [(-1, 0)]
    await platform.wait_serving({v1, v2})

    traffic = platform.traffic()
    channels = [secure_channel(g.grpc.address) for g in platform.gateways]
    stubs = [inference_grpc.GRPCInferenceServiceStub(c) for c in channels]
    first: dict[str, int] = {}
    try:
        # 4,000 keys put 70.1% on control (the hashing is deterministic): 2% is 2.8 sigma.
        for start in range(0, AB_KEYS, 500):
            keys = [f"user-{n}" for n in range(start, start + 500)]
            served = await asyncio.gather(
                *(traffic.infer(stubs[n % 2], n, key) for n, key in enumerate(keys))
            )
            first.update(zip(keys, served, strict=True))
        asked_again = list(first)[:1000]  # each through the other gateway
        served_again = await asyncio.gather(
            *(traffic.infer(stubs[(n + 1) % 2], n, key) for n, key in enumerate(asked_again))
        )
        again = dict(zip(asked_again, served_again, strict=True))
    finally:
        for channel in channels:
            await channel.close()

    assert traffic.failures == []
    split = Counter(first.values())
    assert abs(split[v1] / AB_KEYS - 0.70) <= 0.02, split
    assert abs(split[v2] / AB_KEYS - 0.30) <= 0.02, split
    assert all(again[key] == first[key] for key in again), "a sticky key changed arm"
    assert rollout.phase == types.ROLLOUT_PHASE_PROGRESSING

    ended = await platform.api.PromoteNow(
        api.PromoteNowRequest(rollout_id=rollout.rollout_id, version=v1, reason="control won")
    )
    assert ended.rollout.phase == types.ROLLOUT_PHASE_SUCCEEDED
    await platform.wait_serving({v1})


async def test_a_bandit_moves_traffic_to_the_more_accurate_arm_and_keys_only_follow_it(
    platform: Platform,
) -> None:
    v1 = await platform.register(platform.iris.classifier)
    v2 = await platform.register(platform.iris.retrained)
    await platform.deploy_first(v1)
    policy = types.DeploymentPolicy(
        model=platform.model,
        strategy=types.STRATEGY_BANDIT,
        sticky_key="user",
        bandit=types.BanditPolicy(
            reward=types.BANDIT_REWARD_ACCURACY, rebalance_interval=duration(0.0)
        ),
    )
    response = await platform.api.StartRollout(
        api.StartRolloutRequest(model=platform.model, version=v2, policy_override=policy)
    )
    rollout_id = response.rollout.rollout_id
    rollout = await platform.wait_phase(rollout_id, types.ROLLOUT_PHASE_PROGRESSING)
    assert rollout.weight_percent == 50
    await platform.wait_serving({v1, v2})

    traffic = platform.traffic()
    channels = [secure_channel(g.grpc.address) for g in platform.gateways]
    stubs = [inference_grpc.GRPCInferenceServiceStub(c) for c in channels]
    keys = [f"user-{n}" for n in range(2000)]

    async def serve_every_key() -> dict[str, int]:
        served = await asyncio.gather(
            *(traffic.infer(stubs[n % 2], n, key) for n, key in enumerate(keys))
        )
        return dict(zip(keys, served, strict=True))

    try:
        before = await serve_every_key()
        # The drift detector's windows: the candidate right 90% of the time, the baseline 70%.
        for _ in range(3):
            await platform.publish_window(v2, requests=400, labeled=400, accuracy=0.90)
            await platform.publish_window(v1, requests=400, labeled=400, accuracy=0.70)

        async def rebalanced() -> bool:
            return bool((await platform.rollout(rollout_id)).weight_percent == 95)

        await eventually(rebalanced, 60)

        async def gateways_follow() -> bool:
            probe = await asyncio.gather(
                *(traffic.infer(stubs[n % 2], n, f"probe-{n}") for n in range(200))
            )
            return sum(version == v2 for version in probe) >= 170

        await eventually(gateways_follow, 60)
        after = await serve_every_key()
    finally:
        for channel in channels:
            await channel.close()

    assert traffic.failures == []
    assert abs(Counter(before.values())[v2] / len(keys) - 0.50) <= 0.04
    assert abs(Counter(after.values())[v2] / len(keys) - 0.95) <= 0.02, Counter(after.values())
    # Sticky keys: a key moves only to the arm that gained traffic, never away from it.
    assert all(after[key] == v2 for key in keys if before[key] == v2)
    rollout = await platform.rollout(rollout_id)
    assert rollout.phase == types.ROLLOUT_PHASE_PROGRESSING
    ended = await platform.api.PromoteNow(
        api.PromoteNowRequest(rollout_id=rollout_id, reason="the bandit found the winner")
    )
    assert ended.rollout.phase == types.ROLLOUT_PHASE_SUCCEEDED
    await platform.wait_serving({v2})


async def test_shadow_never_changes_responses(platform: Platform) -> None:
    v1 = await platform.register(platform.iris.classifier)
    v2 = await platform.register(platform.iris.retrained)
    await platform.deploy_first(v1)
    policy = types.DeploymentPolicy(
        model=platform.model,
        strategy=types.STRATEGY_SHADOW,
        shadow=types.ShadowPolicy(mirror_percent=100),
    )
    response = await platform.api.StartRollout(
        api.StartRolloutRequest(model=platform.model, version=v2, policy_override=policy)
    )
    await platform.wait_phase(response.rollout.rollout_id, types.ROLLOUT_PHASE_PROGRESSING)
    state = await platform.api.GetDeploymentState(
        api.GetDeploymentStateRequest(model=platform.model)
    )
    assert (state.state.shadow.version, state.state.shadow.mirror_percent) == (v2, 100)

    live = [g for g in state.gateways if g.live]
    assert len(live) >= 2
    assert all({v1, v2} <= set(g.ready_versions) for g in live)  # the shadow is loaded

    traffic = platform.traffic()
    load = asyncio.create_task(traffic.run())
    await asyncio.sleep(3.0)
    traffic.stop()
    await load
    assert traffic.failures == []
    assert set(traffic.served) == {v1}
    assert sum(traffic.served.values()) > 100


async def test_invalid_requests_get_precise_statuses(platform: Platform) -> None:
    v1 = await platform.register(platform.iris.classifier)
    v2 = await platform.register(platform.iris.retrained)

    async def status_of(call: Any) -> tuple[grpc.StatusCode, str]:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call
        return caught.value.code(), caught.value.details() or ""

    uneven = types.DeploymentPolicy(
        model=platform.model,
        strategy=types.STRATEGY_AB,
        ab=types.AbPolicy(
            arms=[
                types.AbArm(
                    name="a", target=types.ARM_TARGET_VERSION, version=1, weight_percent=60
                ),
                types.AbArm(
                    name="b", target=types.ARM_TARGET_VERSION, version=2, weight_percent=30
                ),
            ]
        ),
    )
    code, details = await status_of(
        platform.api.SetDeploymentPolicy(api.SetDeploymentPolicyRequest(policy=uneven))
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "sum to 100, they sum to 90" in details
    policy = await platform.api.GetDeploymentPolicy(
        api.GetDeploymentPolicyRequest(model=platform.model)
    )
    assert policy.is_default  # nothing half-stored

    code, details = await status_of(
        platform.api.StartRollout(api.StartRolloutRequest(model=platform.model, version=99))
    )
    assert (code, "version 99" in details) == (grpc.StatusCode.NOT_FOUND, True)

    await platform.deploy_first(v1)
    await platform.registry_api.ArchiveModelVersion(
        registry_pb.ArchiveModelVersionRequest(model=platform.model, version=v2, reason="bad")
    )
    code, details = await status_of(
        platform.api.Rollback(api.RollbackRequest(model=platform.model, to_version=v2))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "archived" in details

    [finished] = (
        await platform.api.ListRollouts(api.ListRolloutsRequest(model=platform.model))
    ).rollouts
    code, details = await status_of(
        platform.api.PauseRollout(api.PauseRolloutRequest(rollout_id=finished.rollout_id))
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    assert "only a running rollout can be paused" in details
    code, _ = await status_of(
        platform.api.GetRollout(api.GetRolloutRequest(rollout_id="no-such-rollout"))
    )
    assert code == grpc.StatusCode.NOT_FOUND
