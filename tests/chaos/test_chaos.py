"""Chaos: two replicas of every service on a three-broker Kafka and PostgreSQL, under steady
load through both gateways with ground truth flowing. In turn, each service loses a replica
to SIGKILL (the lease holder where there is one) and gets it back; a version is promoted
while a deployer replica is down; the inputs drift, and during the retrain that follows a
broker and the retrain trigger's leader are killed. At the end nothing was lost or doubled,
only requests in flight on the killed gateway may have failed, and the loop closed: the
promotion rolled out and the drift ended in a retrained version at 100%."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from flywheel_cli.connection import Addresses
from flywheel_examples.demo import Load, train_first_version, until

from flywheel.deployer.v1 import deployer_pb2 as deployer_pb
from flywheel.deployer.v1 import types_pb2 as deployer_types
from flywheel.drift.v1 import drift_pb2 as drift_pb
from flywheel.drift.v1 import types_pb2 as drift_types
from flywheel.registry.v1 import registry_pb2 as registry_pb
from flywheel.retrain.v1 import retrain_pb2 as retrain_pb
from flywheel.retrain.v1 import types_pb2 as retrain_types
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings
from flywheel_common.timestamps import duration
from flywheel_common.topics import PREDICTIONS
from flywheel_testing.clients import retrying_options
from flywheel_testing.leases import lease_holder
from flywheel_testing.processes import ServiceReplica
from flywheel_testing.tls import pki

from .fleet import Fleet, KafkaCluster, partition_of, partition_owners, timed
from .ledger import Ledger, event_problems, log_problems, window_problems

pytestmark = [pytest.mark.chaos, pytest.mark.integration, pytest.mark.timeout(900)]

WINDOW = 50
"""Predictions per drift window: windows close every few seconds at this rate."""
RATE = 30.0
"""Requests per second, shared by both gateways."""
TRAINING_ROWS = 400
"""Logged rows the retrain learns from (the newest, all after the shift) beside the holdout."""
HOLDOUT = 100
WAIT = 180.0
"""Longest wait for any one outcome."""
SUCCEEDED = deployer_types.ROLLOUT_PHASE_SUCCEEDED
ROLLOUT_ENDED = frozenset(
    {deployer_types.ROLLOUT_PHASE_ROLLED_BACK, deployer_types.ROLLOUT_PHASE_ABORTED}
)
RUN_FINISHED = frozenset(
    {
        retrain_types.RUN_STATE_PROMOTED,
        retrain_types.RUN_STATE_REJECTED,
        retrain_types.RUN_STATE_FAILED,
        retrain_types.RUN_STATE_CANCELLED,
        retrain_types.RUN_STATE_AWAITING_APPROVAL,
    }
)


@dataclass
class Summary:
    """What the closing note reports: times, takeovers and counts."""

    started: float = field(default_factory=time.monotonic)
    steps: list[tuple[float, str]] = field(default_factory=list)
    takeovers: dict[str, float] = field(default_factory=dict)
    restarts: dict[str, float] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)

    def step(self, what: str) -> None:
        """Note a step, and print it as it happens."""
        self.steps.append((time.monotonic() - self.started, what))
        print(f"chaos {self.steps[-1][0]:6.1f}s  {what}", flush=True)

    def render(self) -> str:
        lines = [f"chaos summary ({self.counts.pop('model', '')})"]
        lines += [f"  {at:6.1f}s  {what}" for at, what in self.steps]
        lines.append("  takeover after kill -9 (s):")
        lines += [f"    {name:<34}{seconds:6.2f}" for name, seconds in self.takeovers.items()]
        lines.append("  restart to SERVING (s):")
        lines += [f"    {name:<34}{seconds:6.2f}" for name, seconds in self.restarts.items()]
        lines += [f"  {name}: {value}" for name, value in self.counts.items()]
        lines.append(f"  total {time.monotonic() - self.started:.0f}s")
        return "\n".join(lines)


@dataclass
class Chaos:
    fleet: Fleet
    cluster: KafkaCluster
    model: str
    data_dir: Path
    summary: Summary = field(default_factory=Summary)
    load: Load | None = None
    retried: set[str] = field(default_factory=set)
    """Requests in flight on the gateways when one was killed."""

    def __post_init__(self) -> None:
        self.registry = self.fleet.stub("registry")
        self.deployer = self.fleet.stub("deployer")
        self.drift = self.fleet.stub("drift")
        self.retrain = self.fleet.stub("retrain")

    # The loop's moves, through the services' public APIs.

    async def configure(self) -> None:
        """Direct rollouts until v1 serves, windows of WINDOW, no retrain until the drift."""
        await self.roll_out_as(deployer_types.STRATEGY_DIRECT)
        await self.drift.SetMonitorConfig(
            drift_pb.SetMonitorConfigRequest(
                config=drift_types.MonitorConfig(
                    model=self.model,
                    window=drift_types.WindowSpec(
                        kind=drift_types.WINDOW_KIND_COUNT, size_count=WINDOW
                    ),
                )
            )
        )
        await self.set_retrain_policy(enabled=False)

    async def canary(self) -> None:
        """Later versions roll out as a short canary judged on the drift windows."""
        await self.roll_out_as(
            deployer_types.STRATEGY_CANARY,
            canary=deployer_types.CanaryPolicy(
                steps_percent=[50, 100],
                min_step_duration=duration(1.0),
                min_request_count=WINDOW // 2,
            ),
            analysis=deployer_types.AnalysisThresholds(max_error_rate=0.01),
        )

    async def roll_out_as(self, strategy: deployer_types.Strategy.ValueType, **fields: Any) -> None:
        """The model's deployment policy: every promotion rolls out with `strategy`."""
        policy = deployer_types.DeploymentPolicy(
            model=self.model, strategy=strategy, auto_rollout_on_promotion=True, **fields
        )
        await self.deployer.SetDeploymentPolicy(
            deployer_pb.SetDeploymentPolicyRequest(policy=policy)
        )

    async def set_retrain_policy(self, *, enabled: bool) -> None:
        """The default policy, off until the shifted data is there; then it trains on the
        newest rows, all shifted, and the gate holds the newest HOLDOUT out."""
        policy = (
            await self.retrain.GetRetrainPolicy(
                retrain_pb.GetRetrainPolicyRequest(model=self.model)
            )
        ).policy
        policy.enabled = enabled
        policy.gate.holdout_size = HOLDOUT
        policy.gate.min_improvement = 0.05
        policy.training_data.max_rows = TRAINING_ROWS + HOLDOUT
        await self.retrain.SetRetrainPolicy(retrain_pb.SetRetrainPolicyRequest(policy=policy))

    async def register(self, *, promote: bool) -> None:
        # A list of replicas names no one host: the certificate's `localhost` is checked.
        tls = pki().client_tls().model_copy(update={"server_name": "localhost"})
        addresses = Addresses(registry=self.fleet.target("registry"), tls=tls)
        await train_first_version(addresses, self.model, self.data_dir, promote=promote)

    async def promote(self, version: int) -> None:
        await self.registry.SetAlias(
            registry_pb.SetAliasRequest(
                model=self.model, alias="production", version=version, reason="chaos test"
            )
        )

    async def rollout(self, version: int) -> Any:
        response = await self.deployer.ListRollouts(
            deployer_pb.ListRolloutsRequest(model=self.model)
        )
        return next((r for r in response.rollouts if r.version == version), None)

    async def rolled_out(self, version: int) -> None:
        async def done() -> bool:
            rollout = await self.rollout(version)
            if rollout is not None and rollout.phase in ROLLOUT_ENDED:
                raise AssertionError(f"the rollout of v{version} ended: {rollout.end_reason}")
            return rollout is not None and rollout.phase == SUCCEEDED

        await timed(done, WAIT, f"the rollout of v{version}")
        rollout = await self.rollout(version)
        took = rollout.finished_at.ToDatetime() - rollout.created_at.ToDatetime()
        self.summary.step(
            f"v{version} rolled out ({deployer_types.Strategy.Name(rollout.strategy)}, "
            f"{took.total_seconds():.1f}s from its start)"
        )

    async def routing(self) -> dict[int, int]:
        response = await self.deployer.GetDeploymentState(
            deployer_pb.GetDeploymentStateRequest(model=self.model)
        )
        return {int(r.version): int(r.weight_percent) for r in response.state.routes}

    async def run_in(self, states: frozenset[int]) -> Any:
        response = await self.retrain.ListRuns(retrain_pb.ListRunsRequest(model=self.model))
        return next((r for r in response.runs if r.state in states), None)

    def answered(self, count: int) -> Callable[[], Awaitable[bool]]:
        assert self.load is not None
        load = self.load

        async def enough() -> bool:
            return len(load.answered) >= count

        return enough

    # The kills.

    def lease_taken(self, service: str, standby: ServiceReplica) -> Callable[[], Awaitable[bool]]:
        url = self.fleet.databases[service]

        async def taken() -> bool:
            holder = await lease_holder(url)
            return holder is not None and holder[0] == standby.settings.instance_id

        return taken

    async def restart(self, replica: ServiceReplica) -> None:
        seconds = await replica.start()
        self.summary.restarts[str(replica.settings.instance_id)] = seconds

    async def kill_leader(
        self,
        service: str,
        pair: tuple[ServiceReplica, ServiceReplica],
        meanwhile: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """SIGKILL the first of `pair` (the lease holder, as `Fleet.leader` found it), do
        `meanwhile`, and time the other replica's takeover."""
        leader, standby = pair
        await leader.kill()
        killed = time.monotonic()
        self.summary.step(f"killed {leader.settings.instance_id} (lease holder)")
        if meanwhile is not None:
            await meanwhile()
        await timed(self.lease_taken(service, standby), WAIT, f"{service}'s lease to move")
        self.summary.takeovers[f"{service} lease"] = time.monotonic() - killed

    async def kill_and_restart(self, service: str) -> None:
        pair = await self.fleet.leader(service)
        await self.kill_leader(service, pair)
        await self.restart(pair[0])

    async def kill_drift_replica(self) -> None:
        """The drift leader: its lease and its partitions move to the other replica."""
        leader, standby = await self.fleet.leader("drift")
        url = self.fleet.databases["drift"]
        held = [
            p
            for p, owner in (await partition_owners(url)).items()
            if owner != standby.settings.instance_id
        ]

        async def partitions_moved() -> bool:
            owners = await partition_owners(url)
            return all(owners.get(p) == standby.settings.instance_id for p in held)

        began = time.monotonic()
        await self.kill_leader("drift", (leader, standby))
        await timed(partitions_moved, WAIT, f"drift partitions {held} to move")
        self.summary.takeovers[f"drift partitions {held}"] = time.monotonic() - began
        await self.restart(leader)

    async def kill_gateway(self) -> None:
        """A gateway dies under load, while requests are in flight: only they may fail."""
        assert self.load is not None
        load, victim = self.load, self.fleet.replicas["gateway"][0]
        async with asyncio.timeout(WAIT):
            while not load.in_flight:
                await asyncio.sleep(0.001)
        self.retried = set(load.in_flight)
        await victim.kill()
        self.summary.step(
            f"killed {victim.settings.instance_id} with {len(self.retried)} requests in flight"
        )
        await self.restart(victim)

    async def promote_while_a_deployer_is_down(self, version: int) -> None:
        async def promote() -> None:
            await self.promote(version)
            self.summary.step(f"v{version} promoted while a deployer is down")

        began = time.monotonic()
        leader, standby = await self.fleet.leader("deployer")
        await self.kill_leader("deployer", (leader, standby), promote)
        await timed(self.started(version), WAIT, f"the rollout of v{version} to start")
        self.summary.takeovers[f"deployer: rollout of v{version} started"] = (
            time.monotonic() - began
        )
        await self.restart(leader)

    def started(self, version: int) -> Callable[[], Awaitable[bool]]:
        async def exists() -> bool:
            return await self.rollout(version) is not None

        return exists

    async def kill_broker(self) -> None:
        """SIGKILL the broker leading the model's predictions, a few seconds, back again."""
        partition = partition_of(self.model, PREDICTIONS.partitions)
        before = (await self.cluster.partitions(PREDICTIONS.name))[partition]
        broker = int(before["leader"])
        await self.cluster.node("kill", broker)
        killed = time.monotonic()
        self.summary.step(f"killed broker {broker} (leads {PREDICTIONS.name}-{partition})")

        async def led_elsewhere() -> bool:
            now = (await self.cluster.partitions(PREDICTIONS.name))[partition]
            return int(now["leader"]) not in (broker, -1)

        try:
            await timed(led_elsewhere, WAIT, f"a new leader of {PREDICTIONS.name}-{partition}")
            self.summary.takeovers[f"kafka: {PREDICTIONS.name}-{partition} leader"] = (
                time.monotonic() - killed
            )
        finally:
            await self.cluster.node("start", broker)  # the cluster outlives a failed test
        self.summary.restarts[f"broker {broker}"] = time.monotonic() - killed
        self.summary.step(f"broker {broker} back")

    async def retrain_through_a_leader_kill(self) -> Any:
        """Enable retraining, and kill the trigger's leader while the run trains. Its runs
        folder, which the other replica could not read in a pod of its own, is moved away
        until the run has finished; then it is back and the replica restarts."""
        await self.set_retrain_policy(enabled=True)
        self.summary.step("retrain policy enabled")
        training = await until(
            lambda: self.run_in(frozenset({retrain_types.RUN_STATE_TRAINING})),
            WAIT,
            "a training run",
        )
        self.summary.step(f"run {training.run_id[:8]} training")
        leader, standby = await self.fleet.leader("retrain")
        folder = leader.settings.data_dir
        hidden = folder.with_name(f"{folder.name}-unreachable")

        async def hide() -> None:
            folder.rename(hidden)

        try:
            await self.kill_leader("retrain", (leader, standby), hide)
            run = await until(lambda: self.run_in(RUN_FINISHED), WAIT, "the run to finish")
        finally:
            if hidden.exists():
                hidden.rename(folder)
        self.summary.step(f"run {run.run_id[:8]} ended {retrain_types.RunState.Name(run.state)}")
        await self.restart(leader)
        return run

    # The scenario.

    async def run(self, publisher: EventPublisher) -> None:
        await self.configure()
        await self.register(promote=True)
        self.summary.step("v1 registered and promoted")
        await self.rolled_out(1)
        await self.canary()
        self.load = Load(
            self.fleet.target("gateway"),
            self.model,
            publisher,
            tls=pki().client_tls().model_copy(update={"server_name": "localhost"}),
            rate_per_second=RATE,
            channel_options=retrying_options(),
        )
        traffic = asyncio.create_task(self.load.run())
        try:
            await self.chaos()
        finally:
            self.load.stop()
            await traffic
        self.summary.step("load stopped")

    async def chaos(self) -> None:
        assert self.load is not None
        await timed(self.answered(100), WAIT, "traffic")
        self.summary.step("traffic flowing through both gateways")
        await self.register(promote=False)
        self.summary.step("v2 registered")
        await self.kill_and_restart("registry")
        await self.kill_drift_replica()
        await self.kill_gateway()
        await self.promote_while_a_deployer_is_down(2)
        await self.rolled_out(2)

        self.load.shift_sigmas = 1.0
        shifted_from = len(self.load.answered)
        self.summary.step("inputs shifted by 1 sigma")
        broker = asyncio.create_task(self.kill_broker())
        try:
            await timed(
                self.answered(shifted_from + TRAINING_ROWS + HOLDOUT + WINDOW),
                WAIT,
                "shifted traffic",
            )
            run = await self.retrain_through_a_leader_kill()
        finally:
            await broker
        assert run.state == retrain_types.RUN_STATE_PROMOTED, run
        self.summary.step(f"v{run.candidate_version} gated: {run.gate.summary}")
        await self.rolled_out(run.candidate_version)
        self.summary.counts["retrained version"] = run.candidate_version


async def test_losing_any_replica_or_a_broker_loses_nothing(
    fleet: Fleet, cluster: KafkaCluster, chaos_dir: Path, model: str
) -> None:
    chaos = Chaos(fleet, cluster, model, chaos_dir / "examples")
    publisher = EventPublisher(
        KafkaSettings(bootstrap_servers=cluster.bootstrap, linger_ms=20), source="chaos-test"
    )
    await publisher.start()
    try:
        await chaos.run(publisher)
    finally:
        await publisher.stop()
    load = chaos.load
    assert load is not None
    retrained = int(chaos.summary.counts["retrained version"])
    assert await chaos.routing() == {retrained: 100}
    assert fleet.exited() == []

    # Every request was answered but those in flight on the killed gateway, which may fail.
    assert set(load.failed) <= chaos.retried, load.failed
    sent = set(load.answered) | set(load.failed)
    ledger = await settled_ledger(cluster.bootstrap, model, set(load.answered))
    assert log_problems(ledger, load.answered, sent, chaos.retried) == []
    assert window_problems(ledger, WINDOW) == []
    assert event_problems(ledger, range(1, retrained + 1)) == []

    summary = chaos.summary
    summary.counts |= {
        "model": model,
        "requests sent": len(sent),
        "failed": f"{len(load.failed)} (in flight when a gateway was killed: {len(chaos.retried)})",
        "served by version": dict(sorted(load.served.items())),
        "prediction logs": f"{len(ledger.logs)} for {len(ledger.logs_per_request())} requests",
        "metric windows": f"{len(ledger.window_ids())} once each "
        f"({len(ledger.windows)} records before dedupe)",
        "registrations and promotions": f"{len(ledger.event_ids())} once each "
        f"({len(ledger.events)} model events before dedupe)",
    }
    print("\n" + summary.render())


async def settled_ledger(bootstrap: str, model: str, answered: set[str]) -> Ledger:
    """The ledger once every answered request's log and every full window has arrived
    (or WAIT has passed: the rules then say what is missing)."""
    ledger = await Ledger.read(bootstrap, model)
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline and not _settled(ledger, answered):
        await asyncio.sleep(1.0)
        ledger = await Ledger.read(bootstrap, model)
    await asyncio.sleep(2.0)  # anything duplicated would have arrived by now
    return await Ledger.read(bootstrap, model)


def _settled(ledger: Ledger, answered: set[str]) -> bool:
    if not answered <= set(ledger.logs_per_request()):
        return False
    windows = ledger.window_ids()
    return all(
        (version, count // WINDOW - 1) in windows or count < WINDOW
        for version, count in ledger.logs_per_version().items()
    )
