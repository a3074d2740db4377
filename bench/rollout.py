"""Benchmark: from a rollback decision to the last gateway serving 0% of the bad version.

    make bench-rollout        # starts Kafka if needed
    uv run python bench/rollout.py --rollbacks 50 --gateways 3

A registry, a deployer and N gateways run as processes. Each round starts a canary of a
second iris version; once it takes traffic, a metric window with a 50% error rate is
published for it, the deployer's analysis decides to roll back, and the round measures from
the decision (`RolloutRolledBack.occurred_at`) to the moment the last gateway applied the
routing without the candidate (`GatewayStatus.heartbeat_at` of the first status reporting
that generation; statuses are coalesced for up to 50 ms, which this figure includes).

Printed beside it, measured in the same run on the same broker: Kafka publish-to-consume
latency of a small event, the floor any event-driven rollback stands on.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, TopicPartition
from harness import quantile, register, start_service, stop
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from flywheel.deployer.v1 import deployer_pb2 as api
from flywheel.deployer.v1 import deployer_pb2_grpc as api_grpc
from flywheel.deployer.v1 import events_pb2 as deployer_events
from flywheel.deployer.v1 import types_pb2 as types
from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel.drift.v1 import types_pb2 as drift_types
from flywheel.gateway.v1 import events_pb2 as gateway_events
from flywheel_common.events import EventTypes, decode_event
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings
from flywheel_common.timestamps import timestamp
from flywheel_common.topics import (
    DEPLOYMENT_EVENTS,
    DEPLOYMENTS,
    GATEWAY_STATUS,
    MODEL_METRICS,
    ensure_topics,
)
from flywheel_sdk import to_onnx
from flywheel_testing.kafka import client_options
from flywheel_testing.tls import secure_channel


def iris_versions() -> tuple[bytes, bytes]:
    features, labels = load_iris(return_X_y=True)
    first = LogisticRegression(max_iter=500).fit(features, labels)
    second = LogisticRegression(max_iter=500, C=0.1).fit(features, labels)
    return to_onnx(first, 4).onnx, to_onnx(second, 4).onnx


class Watcher:
    """Follows deployment events, routing states and gateway statuses of one model."""

    def __init__(self, bootstrap: str, model: str) -> None:
        self._model = model.encode()
        self._consumer = AIOKafkaConsumer(**client_options(bootstrap), group_id=None)
        self.rolled_back: dict[str, float] = {}
        """rollout id -> decision time (seconds since the epoch)."""
        self.generations: dict[str, int] = {}
        """rollout id -> generation of its latest routing state."""
        self.applied: dict[tuple[str, int], float] = {}
        """(gateway, generation) -> when that gateway first reported it."""
        self._types = EventTypes.flywheel()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        partitions = [
            TopicPartition(topic.name, index)
            for topic in (DEPLOYMENT_EVENTS, DEPLOYMENTS, GATEWAY_STATUS)
            for index in range(topic.partitions)
        ]
        self._consumer.assign(partitions)
        await self._consumer.seek_to_end(*partitions)
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._consumer.stop()

    async def _run(self) -> None:
        async for record in self._consumer:
            if record.value is None:
                continue
            message = decode_event(record.headers, record.value, self._types).message
            if isinstance(message, deployer_events.RolloutRolledBack):
                self.rolled_back[message.rollout_id] = message.occurred_at.ToNanoseconds() / 1e9
            elif isinstance(message, deployer_events.DeploymentState):
                if record.key == self._model:
                    self.generations[message.rollout_id] = message.generation
            elif isinstance(message, gateway_events.GatewayStatus):
                generation = message.applied_generations.get(self._model.decode())
                if generation is not None:
                    key = (message.gateway_id, generation)
                    at = message.heartbeat_at.ToNanoseconds() / 1e9
                    self.applied.setdefault(key, at)


async def until(condition: object, timeout: float = 60.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():  # type: ignore[operator]
            await asyncio.sleep(0.01)


async def bad_window(publisher: EventPublisher, model: str, version: int) -> None:
    started = timestamp(datetime.now(UTC))
    window = drift_events.ModelMetricsWindow(
        model=model,
        version=version,
        window=drift_types.WindowRef(window_id=uuid.uuid4().hex, start=started, end=started),
        request_count=100,
        error_count=50,
        latency=drift_types.LatencyQuantiles(p99_ms=10.0),
    )
    await publisher.publish(MODEL_METRICS, window, subject=model)


async def kafka_latency_ms(publisher: EventPublisher, bootstrap: str, rounds: int) -> list[float]:
    """Publish-to-consume latency of one small event at a time through the same broker."""
    consumer = AIOKafkaConsumer(**client_options(bootstrap))
    await consumer.start()
    partitions = [TopicPartition(MODEL_METRICS.name, i) for i in range(MODEL_METRICS.partitions)]
    consumer.assign(partitions)
    await consumer.seek_to_end(*partitions)
    model = f"latency-{uuid.uuid4().hex[:6]}"
    latencies = []
    try:
        for _ in range(rounds):
            sent = time.time()
            await bad_window(publisher, model, 1)
            async with asyncio.timeout(30):
                while True:
                    batches = await consumer.getmany(timeout_ms=100)
                    if any(r.key == model.encode() for rs in batches.values() for r in rs):
                        break
            latencies.append((time.time() - sent) * 1000)
    finally:
        await consumer.stop()
    return latencies


@asynccontextmanager
async def platform(
    bootstrap: str, gateways: int, folder: str
) -> AsyncIterator[tuple[str, str, list[str]]]:
    processes = []
    try:
        registry, registry_address = await start_service(
            "registry", {"DATA_DIR": f"{folder}/registry"}, bootstrap
        )
        processes.append(registry)
        gateway_ids = []
        for index in range(gateways):
            gateway_id = f"bench-gw-{index}-{uuid.uuid4().hex[:4]}"
            process, _ = await start_service(
                "gateway",
                {
                    "DATA_DIR": f"{folder}/gateway-{index}",
                    "REGISTRY_ADDRESS": registry_address,
                    "GATEWAY_ID": gateway_id,
                    "LOG_PREDICTIONS": "false",
                    "HEARTBEAT_SECONDS": "1",
                },
                bootstrap,
            )
            processes.append(process)
            gateway_ids.append(gateway_id)
        deployer, deployer_address = await start_service(
            "deployer",
            {
                "DATA_DIR": f"{folder}/deployer",
                "REGISTRY_ADDRESS": registry_address,
                "RECONCILE_INTERVAL_SECONDS": "0.1",
            },
            bootstrap,
        )
        processes.append(deployer)
        yield registry_address, deployer_address, gateway_ids
    finally:
        for process in reversed(processes):
            await stop(process)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--rollbacks", type=int, default=50)
    parser.add_argument("--gateways", type=int, default=3)
    args = parser.parse_args()
    await ensure_topics(KafkaSettings(bootstrap_servers=args.bootstrap))
    model = f"rollout-{uuid.uuid4().hex[:6]}"
    first, second = iris_versions()
    publisher = EventPublisher(KafkaSettings(bootstrap_servers=args.bootstrap), source="bench")
    await publisher.start()
    watcher = Watcher(args.bootstrap, model)
    await watcher.start()
    latencies: list[float] = []
    with tempfile.TemporaryDirectory() as folder:
        async with platform(args.bootstrap, args.gateways, folder) as (registry, deployer, ids):
            v1 = await register(registry, model, first)
            v2 = await register(registry, model, second)
            async with secure_channel(deployer) as channel:
                stub = api_grpc.DeployerServiceStub(channel)
                policy = types.DeploymentPolicy(
                    model=model,
                    strategy=types.STRATEGY_CANARY,
                    canary=types.CanaryPolicy(steps_percent=[50, 100], min_request_count=10),
                    analysis=types.AnalysisThresholds(max_error_rate=0.1),
                )
                await stub.SetDeploymentPolicy(api.SetDeploymentPolicyRequest(policy=policy))
                start = await stub.StartRollout(
                    api.StartRolloutRequest(model=model, version=v1, strategy=types.STRATEGY_DIRECT)
                )
                await wait_phase(stub, start.rollout.rollout_id, types.ROLLOUT_PHASE_SUCCEEDED)
                for _ in range(args.rollbacks):
                    started = await stub.StartRollout(
                        api.StartRolloutRequest(model=model, version=v2)
                    )
                    rollout_id = started.rollout.rollout_id
                    await wait_phase(stub, rollout_id, types.ROLLOUT_PHASE_PROGRESSING)
                    await bad_window(publisher, model, v2)
                    await until(lambda rid=rollout_id: rid in watcher.rolled_back)
                    await wait_phase(stub, rollout_id, types.ROLLOUT_PHASE_ROLLED_BACK)
                    await until(lambda rid=rollout_id: rid in watcher.generations)
                    generation = watcher.generations[rollout_id]
                    await until(
                        lambda g=generation: all((gid, g) in watcher.applied for gid in ids)
                    )
                    last = max(watcher.applied[(gid, generation)] for gid in ids)
                    latencies.append((last - watcher.rolled_back[rollout_id]) * 1000)
        kafka = await kafka_latency_ms(publisher, args.bootstrap, args.rollbacks)
    await watcher.stop()
    await publisher.stop()
    print(
        f"\nrollout: {args.rollbacks} automatic rollbacks, {args.gateways} gateway processes; "
        "milliseconds"
    )
    print(f"{'measure':<58}{'p50':>8}{'p99':>8}")
    rows = {
        "rollback decision -> last gateway at 0% of the bad version": latencies,
        "Kafka publish -> consume, one small event (same broker)": kafka,
    }
    for label, values in rows.items():
        print(f"{label:<58}{quantile(values, 0.5):>8.1f}{quantile(values, 0.99):>8.1f}")
    print(
        f"\nrollback p99 / Kafka p99 = {quantile(latencies, 0.99) / quantile(kafka, 0.99):.1f}"
        " (target: rollback p99 under 1000 ms)"
    )


async def wait_phase(stub: api_grpc.DeployerServiceStub, rollout_id: str, phase: int) -> None:
    async with asyncio.timeout(60):
        while True:
            response = await stub.GetRollout(api.GetRolloutRequest(rollout_id=rollout_id))
            if response.rollout.phase == phase:
                return
            await asyncio.sleep(0.02)


if __name__ == "__main__":
    asyncio.run(main())
