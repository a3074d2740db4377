"""The whole loop on a running platform, as a user would drive it.

Train and promote v1 of the breast-cancer classifier, serve traffic with ground truth, shift
the input distribution, and follow the platform as it alerts, retrains, gates and canaries
v2 to 100% of traffic. Every stage is observed through the services' public APIs, and the
load generator counts each request that failed.

    python -m flywheel_examples.demo        # against `make run`'s default addresses

Each run trains a model of its own, `breast-cancer-<6 hex digits>` (a platform keeps its
models across runs, and the demo's stages start from v1); its first line names it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from flywheel_cli.connection import Addresses
from sklearn.datasets import load_breast_cancer

from flywheel.deployer.v1 import deployer_pb2 as deployer_pb
from flywheel.deployer.v1 import deployer_pb2_grpc as deployer_grpc
from flywheel.deployer.v1 import types_pb2 as deployer_types
from flywheel.drift.v1 import drift_pb2 as drift_pb
from flywheel.drift.v1 import drift_pb2_grpc as drift_grpc
from flywheel.drift.v1 import ground_truth_pb2
from flywheel.drift.v1 import types_pb2 as drift_types
from flywheel.retrain.v1 import retrain_pb2 as retrain_pb
from flywheel.retrain.v1 import retrain_pb2_grpc as retrain_grpc
from flywheel.retrain.v1 import types_pb2 as retrain_types
from flywheel_common.channels import aio_channel
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import ClientTlsSettings
from flywheel_common.timestamps import duration, timestamp
from flywheel_common.topics import GROUND_TRUTH
from inference import grpc_service_pb2 as inference_pb
from inference import grpc_service_pb2_grpc as inference_grpc

STAGES = (
    "v1 trained and registered",
    "v1 serving",
    "traffic flowing",
    "input distribution shifted",
    "drift alert",
    "retrain run started",
    "candidate registered",
    "gate passed, v2 promoted",
    "canary of v2 started",
    "v2 serves 100%",
)
DRIFT_WINDOW = 100
SHIFT_SIGMAS = 1.0
MODEL_PREFIX = "breast-cancer"


@dataclass
class Timeline:
    """When each stage happened, in seconds since the demo started."""

    started: float = field(default_factory=time.monotonic)
    at: dict[str, float] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    on_stage: Callable[[str, float, str], None] = lambda stage, seconds, note: None

    def reached(self, stage: str, note: str = "") -> None:
        self.at[stage] = time.monotonic() - self.started
        self.notes[stage] = note
        self.on_stage(stage, self.at[stage], note)

    def between(self, first: str, last: str) -> float:
        return self.at[last] - self.at[first]


@dataclass
class Load:
    """Batch-1 ModelInfer calls at a steady rate, each followed by its ground truth."""

    gateway: str
    model: str
    publisher: EventPublisher
    tls: ClientTlsSettings = field(default_factory=ClientTlsSettings)
    """How to reach the gateway: TLS (the default) with the CA to trust."""
    token: str = ""
    """Bearer token sent with every request (the reader role suffices)."""
    rate_per_second: float = 100.0
    concurrency: int = 4
    shift_sigmas: float = 0.0
    channel_options: Sequence[tuple[str, Any]] = ()
    """gRPC channel options, such as a service config with a retry policy."""
    answered: dict[str, int] = field(default_factory=dict)
    """The id of each answered request and the version that served it."""
    failed: dict[str, str] = field(default_factory=dict)
    """The id of each failed request and its status."""
    in_flight: set[str] = field(default_factory=set)
    """The ids of the requests sent and not answered yet."""
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        features, labels = load_breast_cancer(return_X_y=True)
        self._features, self._labels = features, labels
        self._std = features.std(axis=0)

    @property
    def served(self) -> Counter[int]:
        """Answered requests by version."""
        return Counter(self.answered.values())

    @property
    def failures(self) -> list[str]:
        return list(self.failed.values())

    async def run(self) -> None:
        async with aio_channel(self.gateway, self.tls, self.channel_options, self.token) as channel:
            stub = inference_grpc.GRPCInferenceServiceStub(channel)
            await asyncio.gather(*(self._worker(stub, i) for i in range(self.concurrency)))

    def stop(self) -> None:
        self._stop.set()

    async def _worker(self, stub: Any, seed: int) -> None:
        rng = np.random.default_rng(seed)
        pause = self.concurrency / self.rate_per_second
        while not self._stop.is_set():
            began = time.monotonic()
            index = int(rng.integers(len(self._labels)))
            row = self._features[index] + self.shift_sigmas * self._std
            await self._infer(stub, row.astype(np.float32), int(self._labels[index]))
            await asyncio.sleep(max(0.0, pause - (time.monotonic() - began)))

    async def _infer(self, stub: Any, row: np.ndarray, label: int) -> None:
        request_id = uuid.uuid4().hex
        request = inference_pb.ModelInferRequest(
            model_name=self.model,
            id=request_id,
            inputs=[
                inference_pb.ModelInferRequest.InferInputTensor(
                    name="features", datatype="FP32", shape=[1, len(row)]
                )
            ],
            raw_input_contents=[row.tobytes()],
        )
        self.in_flight.add(request_id)
        try:
            response = await stub.ModelInfer(request, timeout=10)
        except grpc.aio.AioRpcError as error:
            self.failed[request_id] = f"{error.code().name}: {error.details()}"
            return
        finally:
            self.in_flight.discard(request_id)
        self.answered[request_id] = int(response.model_version)
        truth = ground_truth_pb2.GroundTruth(
            request_id=request_id,
            model=self.model,
            int64_label=label,
            observed_at=timestamp(datetime.now(UTC)),
            source="flywheel-demo",
        )
        await self.publisher.publish(GROUND_TRUTH, truth, subject=self.model, key=request_id)


async def until(condition: Callable[[], Awaitable[Any]], timeout: float, what: str) -> Any:
    """The first truthy value of `condition`, polled; TimeoutError naming what never came."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await condition()
        if value:
            return value
        await asyncio.sleep(0.25)
    raise TimeoutError(f"waited {timeout:.0f}s for {what}")


async def train_first_version(
    endpoints: Addresses, model: str, data_dir: Path, promote: bool = True
) -> None:
    """The example pipeline's first training (a version of its own on each call), made
    `production` unless `promote` is False."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flywheel_examples.breast_cancer",
        "--model",
        model,
        "--registry",
        endpoints.registry,
        "--data-dir",
        str(data_dir),
        *(["--promote"] if promote else []),
        env=os.environ | endpoints.environment(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    if process.returncode:
        raise RuntimeError(f"training failed:\n{output.decode(errors='replace')}")


@dataclass
class Demo:
    endpoints: Addresses
    model: str
    data_dir: Path
    timeline: Timeline
    stage_timeout: float = 240.0
    load: Load | None = None
    alert: Any = None
    """The drift alert the shift raised (a DriftAlert)."""

    async def run(self) -> Timeline:
        async with contextlib.AsyncExitStack() as stack:
            channels = {
                name: await stack.enter_async_context(
                    aio_channel(address, self.endpoints.tls, token=self.endpoints.token)
                )
                for name, address in (
                    ("deployer", self.endpoints.deployer),
                    ("drift", self.endpoints.drift),
                    ("retrain", self.endpoints.retrain),
                )
            }
            deployer = deployer_grpc.DeployerServiceStub(channels["deployer"])
            drift = drift_grpc.DriftServiceStub(channels["drift"])
            retrain = retrain_grpc.RetrainServiceStub(channels["retrain"])
            publisher = EventPublisher(
                self.endpoints.kafka_settings(linger_ms=20),
                source="flywheel-demo",
            )
            await publisher.start()
            stack.push_async_callback(publisher.stop)
            await self._configure(deployer, drift, retrain)

            await train_first_version(self.endpoints, self.model, self.data_dir)
            self.timeline.reached(STAGES[0])
            await self._rollout_done(deployer, 1)
            self.timeline.reached(STAGES[1])

            self.load = Load(
                self.endpoints.gateway,
                self.model,
                publisher,
                tls=self.endpoints.tls,
                token=self.endpoints.token,
            )
            traffic = asyncio.create_task(self.load.run())
            stack.push_async_callback(self._stop_load, traffic)
            await until(lambda: self._served(1, DRIFT_WINDOW), self.stage_timeout, "traffic")
            self.timeline.reached(STAGES[2], f"{sum(self.load.served.values())} requests")

            self.load.shift_sigmas = SHIFT_SIGMAS
            self.timeline.reached(STAGES[3], f"every feature +{SHIFT_SIGMAS:g} sigma")
            alert = await until(lambda: self._alert(drift), self.stage_timeout, "a drift alert")
            self.alert = alert
            self.timeline.reached(STAGES[4], alert.summary or f"{alert.features_drifted} features")
            run = await until(lambda: self._run(retrain), self.stage_timeout, "a retrain run")
            self.timeline.reached(STAGES[5], f"run {run.run_id[:8]}")
            run = await until(
                lambda: self._run(retrain, _PAST_TRAINING), self.stage_timeout, "training"
            )
            if not run.candidate_version:
                raise RuntimeError(f"the retrain run failed: {run.error}")
            self.timeline.reached(STAGES[6], f"v{run.candidate_version}")
            run = await until(lambda: self._run(retrain, _FINISHED), self.stage_timeout, "the gate")
            if run.state != retrain_types.RUN_STATE_PROMOTED:
                raise RuntimeError(f"the candidate was not promoted: {run.error}")
            self.timeline.reached(STAGES[7], run.gate.summary)
            await until(
                lambda: self._rollout(deployer, run.candidate_version),
                self.stage_timeout,
                "the canary",
            )
            self.timeline.reached(STAGES[8])
            await self._rollout_done(deployer, run.candidate_version)
            self.timeline.reached(STAGES[9])
        return self.timeline

    async def _configure(self, deployer: Any, drift: Any, retrain: Any) -> None:
        """Direct rollouts for v1, a canary for every later version; drift windows of 100;
        retrain on drift (at most hourly: the default cooldown) once 500 labeled predictions
        have arrived, with a gate on the newest 100."""
        canary = deployer_types.DeploymentPolicy(
            model=self.model,
            strategy=deployer_types.STRATEGY_CANARY,
            canary=deployer_types.CanaryPolicy(
                steps_percent=[20, 50, 100],
                min_step_duration=duration(2.0),
                min_request_count=DRIFT_WINDOW // 2,
            ),
            # Errors only: latency ratios are noise on a laptop that is also training.
            analysis=deployer_types.AnalysisThresholds(max_error_rate=0.01),
            auto_rollout_on_promotion=True,
        )
        direct = deployer_types.DeploymentPolicy()
        direct.CopyFrom(canary)
        direct.strategy = deployer_types.STRATEGY_DIRECT
        await deployer.SetDeploymentPolicy(deployer_pb.SetDeploymentPolicyRequest(policy=direct))
        self._canary = canary
        await drift.SetMonitorConfig(
            drift_pb.SetMonitorConfigRequest(
                config=drift_types.MonitorConfig(
                    model=self.model,
                    window=drift_types.WindowSpec(
                        kind=drift_types.WINDOW_KIND_COUNT, size_count=DRIFT_WINDOW
                    ),
                )
            )
        )
        policy = (
            await retrain.GetRetrainPolicy(retrain_pb.GetRetrainPolicyRequest(model=self.model))
        ).policy
        policy.gate.holdout_size = 100
        # The first alerts come within a window of the shift, before there is much shifted
        # data to learn from: a run waits until enough labeled predictions have arrived.
        policy.min_new_labeled_samples = 5 * DRIFT_WINDOW
        policy.gate.min_improvement = 0.05
        policy.training_data.window.FromSeconds(3600)
        await retrain.SetRetrainPolicy(retrain_pb.SetRetrainPolicyRequest(policy=policy))

    async def _rollout(self, deployer: Any, version: int) -> Any:
        response = await deployer.ListRollouts(deployer_pb.ListRolloutsRequest(model=self.model))
        return next((r for r in response.rollouts if r.version == version), None)

    async def _rollout_done(self, deployer: Any, version: int) -> None:
        async def done() -> bool:
            rollout = await self._rollout(deployer, version)
            if rollout is not None and rollout.phase in _ROLLOUT_FAILED:
                raise RuntimeError(f"the rollout of v{version} ended: {rollout.end_reason}")
            return rollout is not None and rollout.phase == deployer_types.ROLLOUT_PHASE_SUCCEEDED

        try:
            await until(done, self.stage_timeout, f"the rollout of v{version}")
        except TimeoutError as error:
            rollout = await self._rollout(deployer, version)
            raise TimeoutError(f"{error}; it stands at {rollout}") from None
        if version == 1:
            # Later versions roll out as canaries.
            await deployer.SetDeploymentPolicy(
                deployer_pb.SetDeploymentPolicyRequest(policy=self._canary)
            )

    async def _served(self, version: int, count: int) -> bool:
        assert self.load is not None
        return self.load.served[version] >= count

    async def _alert(self, drift: Any) -> Any:
        response = await drift.ListAlerts(drift_pb.ListAlertsRequest(model=self.model))
        return response.alerts[0] if response.alerts else None

    async def _run(self, retrain: Any, states: frozenset[int] = frozenset()) -> Any:
        response = await retrain.ListRuns(retrain_pb.ListRunsRequest(model=self.model))
        runs = [r for r in response.runs if not states or r.state in states]
        return runs[0] if runs else None

    async def _stop_load(self, traffic: asyncio.Task[None]) -> None:
        if self.load is not None:
            self.load.stop()
        await traffic


_PAST_TRAINING = frozenset(
    {
        retrain_types.RUN_STATE_GATING,
        retrain_types.RUN_STATE_AWAITING_APPROVAL,
        retrain_types.RUN_STATE_PROMOTED,
        retrain_types.RUN_STATE_REJECTED,
        retrain_types.RUN_STATE_FAILED,
        retrain_types.RUN_STATE_CANCELLED,
    }
)
_FINISHED = _PAST_TRAINING - {retrain_types.RUN_STATE_GATING}
_ROLLOUT_FAILED = frozenset(
    {deployer_types.ROLLOUT_PHASE_ROLLED_BACK, deployer_types.ROLLOUT_PHASE_ABORTED}
)


def main(argv: list[str] | None = None) -> None:
    from rich.console import Console

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=f"{MODEL_PREFIX}-{uuid.uuid4().hex[:6]}")
    parser.add_argument("--data-dir", type=Path, default=Path(".run/data/examples"))
    args = parser.parse_args(argv)
    console = Console()

    def show(stage: str, seconds: float, note: str) -> None:
        console.print(
            f"[green]✓[/] {seconds:7.1f}s  {stage}" + (f"  [dim]{note}[/]" if note else ""),
            soft_wrap=True,
        )

    console.print(f"[bold]Flywheel demo[/]: model {args.model}")
    demo = Demo(Addresses(), args.model, args.data_dir, Timeline(on_stage=show))
    timeline = asyncio.run(demo.run())
    load = demo.load
    console.print(
        f"\n[bold]Shift to v2 at 100%:[/] {timeline.between(STAGES[3], STAGES[9]):.1f}s; "
        f"requests served {dict(load.served) if load else {}}, "
        f"failed {len(load.failures) if load else 0}",
        soft_wrap=True,
    )
    if demo.alert is not None and demo.alert.report_url:
        alert = demo.alert
        console.print(f"\n[bold]Drift report of the alert:[/] {alert.report_url}", soft_wrap=True)
        window = f" --window {alert.window.index}" if alert.HasField("window") else ""
        console.print(
            f"  uv run flywheel report {args.model} --version {alert.version}{window} "
            "-o drift-report.html",
            soft_wrap=True, markup=False, highlight=False,
        )  # fmt: skip
    console.print(f"\n{args.model} keeps serving; look at it with:")
    for command in next_steps(args.model):
        console.print(f"  {command}", soft_wrap=True, markup=False, highlight=False)


def next_steps(model: str) -> list[str]:
    """Commands that show what the demo left behind (README's "The loop by hand" has more)."""
    features = len(load_breast_cancer().feature_names)
    row = f"""$(python3 -c 'print(",".join(["14"] * {features}))')"""
    return [
        "uv run flywheel status",
        f"uv run flywheel versions {model}",
        f"uv run flywheel rollouts {model}",
        f"uv run flywheel alerts --model {model}",
        f'uv run flywheel infer {model} "{row}"',
    ]


if __name__ == "__main__":
    main()
