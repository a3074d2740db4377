"""The whole loop with all five services on real Kafka: v1 serves, the inputs shift, drift is
alerted, a retrain is gated and promoted, and v2's canary reaches 100% with no failed request."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import uuid
from pathlib import Path

from flywheel_cli.connection import Addresses
from flywheel_examples.demo import STAGES, Demo, Timeline

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
        endpoints = Addresses(
            registry=address,
            deployer=deployer.grpc.address,
            gateway=gateway.grpc.address,
            drift=drift.grpc.address,
            retrain=retrain.grpc.address,
            kafka=kafka_bootstrap,
        )
        demo = Demo(endpoints, model, tmp_path / "examples", Timeline())
        timeline = await demo.run()
        await _operator_sees_the_loop(endpoints, model)

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


async def flywheel(endpoints: Addresses, *args: str) -> tuple[int, str]:
    """The `flywheel` command line, as an operator runs it."""
    env = os.environ | {
        f"FLYWHEEL_CLI_{name.upper()}": getattr(endpoints, name)
        for name in ("registry", "deployer", "gateway", "drift", "retrain", "kafka")
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flywheel_cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    return process.returncode or 0, output.decode()


async def _operator_sees_the_loop(endpoints: Addresses, model: str) -> None:
    code, output = await flywheel(endpoints, "--json", "status")
    assert code == 0, output
    status = json.loads(output)
    assert all(service["serving"] for service in status["services"].values())
    [entry] = [m for m in status["models"] if m["model"] == model]
    assert entry["aliases"]["production"] == 2
    assert entry["traffic"] == {"2": 100}

    code, output = await flywheel(endpoints, "--json", "retrain", "runs", model)
    assert code == 0, output
    [run] = json.loads(output)
    assert run["state"] == "RUN_STATE_PROMOTED"

    code, output = await flywheel(endpoints, "versions", model)
    assert code == 0, output
    assert "drift-alert:" in output

    code, output = await flywheel(endpoints, "--json", "infer", model, ",".join(["10"] * 30))
    assert code == 0, output
    assert json.loads(output)["version"] == "2"

    code, output = await flywheel(endpoints, "rollouts", model)
    assert code == 0, output
    assert "succeeded" in output

    code, output = await flywheel(endpoints, "promote", model, "99")
    assert code == 1
    assert "error:" in output
    assert "99" in output
