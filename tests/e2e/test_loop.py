"""The whole loop with all five services on real Kafka: v1 serves, the inputs shift, drift is
alerted, a retrain is gated and promoted, and v2's canary reaches 100% with no failed request.
It runs as production does: on the SASL_SSL broker with ACLs, each service as its own Kafka
user (the ACLs of infra/kafka/acls.conf are all the loop needs), TLS on every gRPC port, and
JWTs on every call: the services hold `reader` on the registry, the retrain trigger and the
operator `writer` on the test's model only. `make run` (plaintext broker, static tokens) runs
the loop in test_readme.py, and the chaos test runs it on a three-broker cluster."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

import pytest
from flywheel_cli.connection import Addresses
from flywheel_examples.demo import STAGES, Demo, Timeline
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter


@pytest.fixture
def deployed_models() -> list[str]:
    return [f"cancer-e2e-{uuid.uuid4().hex[:8]}"]


@pytest.mark.usefixtures("kafka_sasl_ssl")  # declared, so its start overlaps earlier tests
@pytest.mark.parametrize("platform", ["secure"], indirect=True)
async def test_drift_to_a_retrained_version_at_full_traffic(
    platform: Addresses,
    deployed_models: list[str],
    tmp_path: Path,
    span_exporter: InMemorySpanExporter,
) -> None:
    [model] = deployed_models
    span_exporter.clear()
    demo = Demo(platform, model, tmp_path / "examples", Timeline())
    timeline = await demo.run()
    await _operator_sees_the_loop(platform, model)
    _one_trace_from_request_to_retrained_version(span_exporter.get_finished_spans(), model)

    assert demo.load is not None
    assert demo.load.failures == []  # across v1's rollout and v2's canary
    assert demo.load.served[1] > 0
    assert demo.load.served[2] > 0
    assert demo.alert.report_url.startswith("https://")  # the page of the alert's window
    times = [timeline.at[stage] for stage in STAGES]
    assert times == sorted(times)
    print(
        f"\nshift to v2 at 100% of traffic: {timeline.between(STAGES[3], STAGES[9]):.1f}s "
        f"(requests served per version {dict(demo.load.served)})"
    )


def _one_trace_from_request_to_retrained_version(spans: Sequence[ReadableSpan], model: str) -> None:
    """The retrain run continues the trace of the request whose window drifted: through the
    detector's alert, the run, the training job's registration (a subprocess, handed the
    trace in TRACEPARENT) and the promotion."""
    runs = [
        span
        for span in spans
        if span.name == "retrain run" and (span.attributes or {}).get("flywheel.model") == model
    ]
    assert runs
    [trace_id] = {span.context.trace_id for span in runs if span.context is not None}
    names = [s.name for s in spans if s.context is not None and s.context.trace_id == trace_id]
    assert any(name.endswith("/ModelInfer") for name in names), names
    assert "drift alert" in names
    assert any(name.endswith("/RegisterModelVersion") for name in names), names
    assert any(name.endswith("/SetAlias") for name in names), names


async def flywheel(endpoints: Addresses, *args: str) -> tuple[int, str]:
    """The `flywheel` command line, as an operator runs it."""
    env = os.environ | endpoints.environment()
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
    # The commands only read (or are refused), so they run at once, as several operators
    # might.
    status, runs, versions, infer, rollouts, promote, elsewhere = await asyncio.gather(
        flywheel(endpoints, "--json", "status"),
        flywheel(endpoints, "--json", "retrain", "runs", model),
        flywheel(endpoints, "versions", model),
        flywheel(endpoints, "--json", "infer", model, ",".join(["10"] * 30)),
        flywheel(endpoints, "rollouts", model),
        flywheel(endpoints, "promote", model, "99"),
        # The operator's token is scoped to the test's model.
        flywheel(endpoints, "versions", "another-teams-model"),
    )
    code, output = status
    assert code == 0, output
    served = json.loads(output)
    assert all(service["serving"] for service in served["services"].values())
    [entry] = [m for m in served["models"] if m["model"] == model]
    assert entry["aliases"]["production"] == 2
    assert entry["traffic"] == {"2": 100}

    code, output = runs
    assert code == 0, output
    [run] = json.loads(output)
    assert run["state"] == "RUN_STATE_PROMOTED"

    code, output = versions
    assert code == 0, output
    assert "drift-alert:" in output

    code, output = infer
    assert code == 0, output
    assert json.loads(output)["version"] == "2"

    code, output = rollouts
    assert code == 0, output
    assert "succeeded" in output

    code, output = promote
    assert code == 1
    assert "error:" in output
    assert "99" in output

    code, output = elsewhere
    assert code == 1
    assert "permission_denied" in output, output
