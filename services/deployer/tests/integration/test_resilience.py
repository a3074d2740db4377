"""A deployer killed with SIGKILL mid-rollout resumes from its database; with two replicas,
the standby takes the leader's lease and finishes the rollout."""

from __future__ import annotations

import asyncio
import signal
import socket
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from flywheel.deployer.v1 import deployer_pb2 as api
from flywheel.deployer.v1 import types_pb2 as types
from flywheel_common.events import EventTypes, decode_event
from flywheel_common.topics import DEPLOYMENTS
from flywheel_testing.backends import unused_port
from flywheel_testing.kafka import client_options
from flywheel_testing.leases import lease_holder
from flywheel_testing.processes import service_process
from flywheel_testing.tls import grpc_settings

from .conftest import Platform
from .test_rollouts import canary_policy, started_rollout


async def deployer_process(platform: Platform, port: int) -> asyncio.subprocess.Process:
    """The platform's deployer, as its own process on `port`, with the same database."""
    assert platform.deployer_settings is not None
    settings = platform.deployer_settings.model_copy(update={"grpc": grpc_settings(port=port)})
    process = await service_process("flywheel_deployer", settings)
    platform.deployer_address = f"127.0.0.1:{port}"
    return process


async def feed_until(platform: Platform, rollout_id: str, done: Any, v1: int, v2: int) -> None:
    while not await done():
        rollout = await platform.rollout(rollout_id)
        if rollout.phase == types.ROLLOUT_PHASE_PROGRESSING:
            await platform.publish_window(v1, 200, errors=1, p99_ms=10.0)
            await platform.publish_window(v2, 50, errors=0, p99_ms=10.0)
        await asyncio.sleep(0.3)


async def serving_v1_with_a_canary_policy(platform: Platform) -> tuple[int, int]:
    """v1 served at 100%, v2 registered, and a canary policy with 1-second steps."""
    v1 = await platform.register(platform.iris.classifier)
    v2 = await platform.register(platform.iris.retrained)
    policy = canary_policy(platform.model, max_error_rate=0.05)
    policy.canary.min_step_duration.FromSeconds(1)
    await platform.api.SetDeploymentPolicy(api.SetDeploymentPolicyRequest(policy=policy))
    await platform.deploy_first(v1)
    return v1, v2


async def promoted_to_the_half_step(platform: Platform, v1: int, v2: int) -> str:
    """Promote v2 and feed metric windows until its canary reaches the 50% step."""
    await platform.promote(v2)
    rollout_id = await started_rollout(platform, v2)

    async def at_half() -> bool:
        return any(s.to_step_index == 1 for s in platform.of_type("RolloutStepAdvanced"))

    async with asyncio.timeout(120):
        await feed_until(platform, rollout_id, at_half, v1, v2)
    return rollout_id


async def finished(platform: Platform, rollout_id: str, v1: int, v2: int) -> None:
    """Feed metric windows until the rollout succeeds and v2 is what the gateways serve."""

    async def succeeded() -> bool:
        rollout = await platform.rollout(rollout_id)
        return bool(rollout.phase == types.ROLLOUT_PHASE_SUCCEEDED)

    async with asyncio.timeout(120):
        await feed_until(platform, rollout_id, succeeded, v1, v2)
    await platform.wait_serving({v2})


def assert_each_step_once_and_no_failed_request(
    platform: Platform, v1: int, v2: int, failures: list[Any]
) -> None:
    steps = [(s.from_step_index, s.to_step_index) for s in platform.of_type("RolloutStepAdvanced")]
    assert steps == [(-1, 0), (0, 1), (1, 2)]
    assert len([e for e in platform.of_type("RolloutStarted") if e.version == v2]) == 1
    assert [e.version for e in platform.of_type("RolloutCompleted")] == [v1, v2]
    assert failures == []


# On SQLite, make run's database; on PostgreSQL the standby of the next test resumes a killed
# leader's rollout the same way.
@pytest.mark.parametrize("platform", ["sqlite"], indirect=True)
async def test_a_deployer_killed_mid_rollout_resumes_without_repeating_a_step(
    platform: Platform,
) -> None:
    v1, v2 = await serving_v1_with_a_canary_policy(platform)
    await platform.deployer.stop()  # from here on the deployer runs as a process
    port = unused_port()
    first = await deployer_process(platform, port)
    traffic = platform.traffic()
    load = asyncio.create_task(traffic.run())
    second = None
    try:
        rollout_id = await promoted_to_the_half_step(platform, v1, v2)
        first.send_signal(signal.SIGKILL)
        await first.wait()

        second = await deployer_process(platform, port)

        await finished(platform, rollout_id, v1, v2)
    finally:
        traffic.stop()
        await load
        for process in (first, second):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 60)

    assert_each_step_once_and_no_failed_request(platform, v1, v2, traffic.failures)
    states = await deployment_generations(platform)
    assert states == sorted(set(states)), "a routing generation was repeated or reordered"


async def deployment_generations(platform: Platform) -> list[int]:
    consumer = AIOKafkaConsumer(**client_options(platform.kafka_bootstrap))
    await consumer.start()
    generations: dict[str, int] = {}
    try:
        partitions = [TopicPartition(DEPLOYMENTS.name, p) for p in range(DEPLOYMENTS.partitions)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while [p for p in partitions if await consumer.position(p) < ends[p]]:
            for records in (await consumer.getmany(timeout_ms=500)).values():
                for record in records:
                    if record.key == platform.model.encode() and record.value is not None:
                        envelope = decode_event(record.headers, record.value, EventTypes.flywheel())
                        generations[envelope.id] = envelope.message.generation
    finally:
        await consumer.stop()
    return list(generations.values())


def holder_of(process: asyncio.subprocess.Process) -> str:
    return f"{socket.gethostname()}-{process.pid}"


@pytest.mark.parametrize("platform", ["postgresql"], indirect=True)
async def test_two_replicas_serve_and_a_standby_finishes_the_rollout_of_a_killed_leader(
    platform: Platform,
) -> None:
    assert platform.deployer_settings is not None
    url = platform.deployer_settings.database.url
    v1, v2 = await serving_v1_with_a_canary_policy(platform)
    await platform.deployer.stop()  # releases its lease: the first process leads at once
    leader = await deployer_process(platform, unused_port())
    standby_port = unused_port()
    standby = await deployer_process(platform, standby_port)  # the API now goes to the standby
    holder = await lease_holder(url)
    assert holder is not None
    assert holder[0] == holder_of(leader)
    traffic = platform.traffic()
    load = asyncio.create_task(traffic.run())
    try:
        rollout_id = await promoted_to_the_half_step(platform, v1, v2)
        leader.send_signal(signal.SIGKILL)
        await leader.wait()
        killed_at = time.monotonic()

        async def taken_over() -> bool:
            return (await lease_holder(url) or ("", 0))[0] == holder_of(standby)

        async with asyncio.timeout(30):
            while not await taken_over():
                await asyncio.sleep(0.1)
        takeover_seconds = time.monotonic() - killed_at

        await finished(platform, rollout_id, v1, v2)
    finally:
        traffic.stop()
        await load
        for process in (leader, standby):
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 60)

    # The lease's ttl in tests is 2 s, renewed every 0.5 s: a standby takes over within both.
    assert takeover_seconds < 2.0 + 0.5 + 2.0, takeover_seconds
    assert_each_step_once_and_no_failed_request(platform, v1, v2, traffic.failures)
    final = await lease_holder(url)
    assert final is not None
    assert final[1] == holder[1] + 1  # one handover, one new fencing token
