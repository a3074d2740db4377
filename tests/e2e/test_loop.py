"""The whole loop with all five services on real Kafka: v1 serves, the inputs shift, drift is
alerted, a retrain is gated and promoted, and v2's canary reaches 100% with no failed request."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

from flywheel_examples.demo import STAGES, Demo, Endpoints, Timeline

from flywheel_common.settings import GrpcSettings, KafkaSettings, TelemetrySettings
from flywheel_common.testing import bounded, tombstone
from flywheel_common.topics import DEPLOYMENTS
from flywheel_deployer.app import build as build_deployer
from flywheel_deployer.settings import DeployerSettings
from flywheel_drift.app import build as build_drift
from flywheel_drift.settings import DriftSettings
from flywheel_gateway.app import build as build_gateway
from flywheel_gateway.settings import GatewaySettings
from flywheel_registry.app import build as build_registry
from flywheel_registry.settings import RegistrySettings
from flywheel_retrain.app import build as build_retrain
from flywheel_retrain.settings import RetrainSettings

TELEMETRY = TelemetrySettings(metrics_port=-1, log_level="WARNING")


async def test_drift_to_a_retrained_version_at_full_traffic(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, linger_ms=5)
    suffix = uuid.uuid4().hex[:8]
    common = {"grpc": GrpcSettings(port=0), "kafka": kafka, "telemetry": TELEMETRY}
    model = f"cancer-e2e-{suffix}"
    async with contextlib.AsyncExitStack() as stack:
        registry = build_registry(
            RegistrySettings(
                **common, data_dir=tmp_path / "registry", consumer_group=f"registry-{suffix}"
            )
        )
        await registry.start()
        stack.push_async_callback(bounded, registry.stop)
        address = registry.grpc.address
        services = [
            build_deployer(
                DeployerSettings(
                    **common,
                    data_dir=tmp_path / "deployer",
                    registry_address=address,
                    reconcile_interval_seconds=0.2,
                    consumer_group=f"deployer-{suffix}",
                )
            ),
            build_gateway(
                GatewaySettings(
                    **common,
                    data_dir=tmp_path / "gateway",
                    registry_address=address,
                    gateway_id=f"gw-{suffix}",
                    heartbeat_seconds=0.5,
                )
            ),
            build_drift(
                DriftSettings(
                    **common,
                    data_dir=tmp_path / "drift",
                    registry_address=address,
                    batch_seconds=0.2,
                    consumer_group=f"drift-{suffix}",
                )
            ),
            build_retrain(
                RetrainSettings(
                    **common,
                    data_dir=tmp_path / "retrain",
                    registry_address=address,
                    reconcile_interval_seconds=0.2,
                    consumer_group=f"retrain-{suffix}",
                )
            ),
        ]
        for service in services:
            await service.start()
            stack.push_async_callback(bounded, service.stop)
        stack.push_async_callback(
            bounded, lambda: tombstone(kafka_bootstrap, DEPLOYMENTS.name, [model])
        )
        deployer, gateway, drift, retrain = services
        endpoints = Endpoints(
            registry=address,
            deployer=deployer.grpc.address,
            gateway=gateway.grpc.address,
            drift=drift.grpc.address,
            retrain=retrain.grpc.address,
            kafka=kafka_bootstrap,
        )
        demo = Demo(endpoints, model, tmp_path / "examples", Timeline())
        timeline = await demo.run()

    assert demo.load is not None
    assert demo.load.failures == []  # across v1's rollout and v2's canary
    assert demo.load.served[1] > 0
    assert demo.load.served[2] > 0
    times = [timeline.at[stage] for stage in STAGES]
    assert times == sorted(times)
    print(
        f"\nshift to v2 at 100% of traffic: {timeline.between(STAGES[3], STAGES[9]):.1f}s "
        f"(requests served per version {dict(demo.load.served)})"
    )
