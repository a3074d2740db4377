"""Benchmark: the whole loop on river's concept-drift streams, beside the baselines a user
would compare it with.

    make bench-loop                                       # starts Kafka if needed
    uv run python bench/loop_quality.py --requests 20000 --streams sea agrawal hyperplane

Each stream (SEA, Agrawal, a rotated hyperplane) changes concept three times through river's
`ConceptDriftStream`: abruptly at 1/4 and 3/4 of the requests, gradually around 1/2. The
first `TRAIN_ROWS` rows of a stream train v1; the rest are served, one KServe V2 request
each, through all five services of a platform in this process on the real broker. Ground
truth of a request is published `--label-delay` requests after it. The model is the same
scikit-learn model for every line (bench/loop_training.py, which is also the training job
the platform runs), so the lines differ only in when they retrain and on what:

- static: v1, never retrained;
- scheduled: retrained every `--schedule-every` requests on the newest labelled rows;
- flywheel: what the gateway actually answered, retrained by the platform's loop with its
  default policies (except the time compression stated in the output);
- oracle: retrained on the first 2,000 labelled rows after each true change, serving from
  the moment those labels have arrived;
- arf: river's adaptive random forest, learning each label as it arrives.

The baselines are replayed offline on the same rows. The figure that matters is the
recovery ratio (flywheel - static) / (oracle - static) of overall accuracy.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import math
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from flywheel_examples.breast_cancer import Dataset, write_csv
from loop_training import ENTRYPOINT, RECENT_ROWS, fit, register_fitted
from river import forest
from river.datasets import synth

from flywheel.drift.v1 import drift_pb2 as drift_pb
from flywheel.drift.v1 import drift_pb2_grpc as drift_grpc
from flywheel.drift.v1 import ground_truth_pb2
from flywheel.registry.v1 import types_pb2 as registry_types
from flywheel.retrain.v1 import retrain_pb2 as retrain_pb
from flywheel.retrain.v1 import retrain_pb2_grpc as retrain_grpc
from flywheel.retrain.v1 import types_pb2 as retrain_types
from flywheel_common.channels import aio_channel
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import LeaseSettings
from flywheel_common.timestamps import duration, timestamp
from flywheel_common.topics import GROUND_TRUTH
from flywheel_sdk import Registry
from flywheel_testing.backends import kafka_address
from flywheel_testing.platform import Platform, in_process
from flywheel_testing.tls import pki
from inference import grpc_service_pb2 as inference_pb
from inference import grpc_service_pb2_grpc as inference_grpc

TRAIN_ROWS = 2000
"""Rows before the served stream that v1 learns from."""
BLOCK = 1000
"""Requests per line of the per-stream table."""
HORIZON = 5000
"""An alert from a change's start to this many requests after its end belongs to that change
(the first one is its detection); any other alert is a false alarm. From the end: a gradual
change is still under way for its whole width."""
LINES = ("static", "scheduled", "flywheel", "oracle", "arf")


@dataclass(frozen=True)
class Change:
    position: int
    """Request at the change's midpoint."""
    width: int
    """Requests over which the new concept takes over."""
    gradual: bool = False

    @property
    def start(self) -> int:
        return self.position - self.width // 2

    @property
    def end(self) -> int:
        return self.position + self.width // 2

    @property
    def kind(self) -> str:
        return f"{'gradual' if self.gradual else 'abrupt'} ({self.width:,})"


@dataclass(frozen=True)
class Stream:
    name: str
    feature_names: list[str]
    features: np.ndarray
    """float32 [TRAIN_ROWS + requests, features]; row TRAIN_ROWS + i is request i."""
    labels: np.ndarray
    changes: list[Change]

    @property
    def requests(self) -> int:
        return len(self.labels) - TRAIN_ROWS

    @property
    def served_labels(self) -> np.ndarray:
        return self.labels[TRAIN_ROWS:]


def change_points(requests: int) -> list[Change]:
    """Abrupt at 1/4 and 3/4, gradual over a twentieth of the stream around 1/2. An abrupt
    change still takes a few dozen requests: river's sigmoid overflows `math.exp` when the
    position is more than ~170 widths away."""
    abrupt = math.ceil((TRAIN_ROWS + requests // 4) / 150)
    return [
        Change(requests // 4, abrupt),
        Change(requests // 2, max(requests // 20, abrupt), gradual=True),
        Change(3 * requests // 4, abrupt),
    ]


def drifting(concepts: list[Any], changes: list[Change], seed: int) -> Any:
    """One river stream moving from each concept to the next at the changes. A nested
    ConceptDriftStream counts its position in the rows drawn from it, from the previous
    change on."""
    stream = concepts[-1]
    for index in reversed(range(len(changes))):
        previous = TRAIN_ROWS + changes[index - 1].position if index else 0
        stream = synth.ConceptDriftStream(
            concepts[index],
            stream,
            position=TRAIN_ROWS + changes[index].position - previous,
            width=changes[index].width,
            seed=seed + index,
        )
    return stream


def concepts_of(name: str, seed: int) -> list[Any]:
    if name == "sea":
        # thresholds 7, 9.5, 8, 9.5: the widest moves SEA offers (its four are 7 to 9.5)
        return [synth.SEA(variant=v, noise=0.05, seed=seed + k) for k, v in enumerate((2, 3, 0, 3))]
    if name == "agrawal":
        return [synth.Agrawal(classification_function=f, seed=seed + f) for f in (0, 2, 5, 8)]
    if name == "hyperplane":  # a new orientation of the separating hyperplane at each change
        return [
            synth.Hyperplane(seed=seed + k, n_features=10, noise_percentage=0.05) for k in range(4)
        ]
    raise ValueError(f"unknown stream {name}")


STREAMS = ("sea", "agrawal", "hyperplane")


def make_stream(name: str, requests: int, seed: int = 7) -> Stream:
    changes = change_points(requests)
    rows = list(
        itertools.islice(drifting(concepts_of(name, seed), changes, seed), TRAIN_ROWS + requests)
    )
    keys = list(rows[0][0])  # the column order, fixed by the first row
    features = np.array([[x[k] for k in keys] for x, _ in rows], dtype=np.float32)
    labels = np.array([int(y) for _, y in rows], dtype=np.int64)
    names = [k if isinstance(k, str) else f"x{k}" for k in keys]  # SEA numbers its features
    return Stream(name, names, features, labels, changes)


# -- The lines replayed offline -------------------------------------------------------------


def replay(stream: Stream, plan: list[tuple[int, slice]]) -> np.ndarray:
    """Whether each request was answered right when the model fitted on rows `slice` serves
    from request `start` until the next step of the plan."""
    plan = sorted((s for s in plan if s[0] < stream.requests), key=lambda s: s[0])
    correct = np.zeros(stream.requests, dtype=bool)
    bounds = [start for start, _ in plan[1:]] + [stream.requests]
    for (start, rows), end in zip(plan, bounds, strict=True):
        if start >= end:  # replaced before it served
            continue
        model = fit(stream.features[rows], stream.labels[rows])
        served = slice(TRAIN_ROWS + start, TRAIN_ROWS + end)
        correct[start:end] = model.predict(stream.features[served]) == stream.labels[served]
    return correct


def static_plan() -> list[tuple[int, slice]]:
    return [(0, slice(0, TRAIN_ROWS))]


def scheduled_plan(requests: int, every: int, delay: int) -> list[tuple[int, slice]]:
    """A retrain every `every` requests on the newest labelled rows at that moment."""
    plan = static_plan()
    for start in range(every, requests, every):
        labelled = TRAIN_ROWS + start - delay
        plan.append((start, slice(max(labelled - RECENT_ROWS, 0), labelled)))
    return plan


def oracle_plan(changes: list[Change], delay: int) -> list[tuple[int, slice]]:
    """After each true change, a model of its first RECENT_ROWS rows, serving as soon as
    their labels are in."""
    plan = static_plan()
    for change in changes:
        first = TRAIN_ROWS + change.position
        plan.append((change.position + RECENT_ROWS + delay, slice(first, first + RECENT_ROWS)))
    return plan


def adaptive_random_forest(stream: Stream, delay: int) -> np.ndarray:
    """river's ARF, trained on v1's rows, then predicting each request and learning each
    label `delay` requests later."""
    model = forest.ARFClassifier(seed=0)

    def row(index: int) -> dict[str, float]:
        return dict(zip(stream.feature_names, stream.features[index].tolist(), strict=True))

    for index in range(TRAIN_ROWS):
        model.learn_one(row(index), int(stream.labels[index]))
    correct = np.zeros(stream.requests, dtype=bool)
    for request in range(stream.requests):
        correct[request] = (
            model.predict_one(row(TRAIN_ROWS + request)) == stream.labels[TRAIN_ROWS + request]
        )
        if request >= delay:
            learned = TRAIN_ROWS + request - delay
            model.learn_one(row(learned), int(stream.labels[learned]))
    return correct


# -- Flywheel's line: the platform ---------------------------------------------------------


@dataclass
class Served:
    """What the gateway answered, request by request."""

    predicted: np.ndarray
    version: np.ndarray
    sent_at: np.ndarray
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Loop:
    """What the platform did while serving a stream."""

    served: Served
    alert_positions: list[int]
    """Requests at which a drift alert came or a decay from the gate started a run."""
    runs: list[Any]


async def wait_until_served(stub: Any, request: Any, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await stub.ModelInfer(request, timeout=5)
            return
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.25)


def infer_request(model: str, stream: Stream, request: int) -> Any:
    row = stream.features[TRAIN_ROWS + request]
    return inference_pb.ModelInferRequest(
        model_name=model,
        id=f"{model}-{request}",
        inputs=[
            inference_pb.ModelInferRequest.InferInputTensor(
                name="features", datatype="FP32", shape=[1, len(row)]
            )
        ],
        raw_input_contents=[row.tobytes()],
    )


def answered_label(response: Any) -> int:
    for index, output in enumerate(response.outputs):
        if output.name == "label":
            return int(np.frombuffer(response.raw_output_contents[index], dtype=np.int64)[0])
    raise ValueError(f"no label output in {[o.name for o in response.outputs]}")


async def drive(
    gateway: Any,
    publisher: EventPublisher,
    model: str,
    stream: Stream,
    concurrency: int,
    delay: int,
    rate: float,
) -> Served:
    """Every request of the stream in order, `concurrency` in flight at most and `rate` per
    second at most (0: no limit); the label of request i is published once request
    i + delay has been answered."""
    n = stream.requests
    served = Served(np.full(n, -1), np.zeros(n, dtype=np.int64), np.zeros(n))
    pending: list[int] = []
    requests = iter(range(n))
    began = time.monotonic()

    async def worker() -> None:
        for request in requests:
            if rate:
                await asyncio.sleep(max(began + request / rate - time.monotonic(), 0.0))
            served.sent_at[request] = time.time()
            try:
                response = await gateway.ModelInfer(
                    infer_request(model, stream, request), timeout=30
                )
            except grpc.aio.AioRpcError as error:
                served.failures.append(f"{error.code().name}: {error.details()}")
                continue
            served.predicted[request] = answered_label(response)
            served.version[request] = int(response.model_version)
            if request >= delay:
                pending.append(request - delay)

    async def labeller(done: asyncio.Event) -> None:
        while not (done.is_set() and not pending):
            await asyncio.sleep(0.05)
            batch, pending[:] = pending[:], []
            if batch:
                await publisher.send([label_record(publisher, model, stream, r) for r in batch])

    done = asyncio.Event()
    labels = asyncio.create_task(labeller(done))
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    pending.extend(range(max(n - delay, 0), n))  # the tail's labels, late as they are
    done.set()
    await labels
    served.seconds = time.monotonic() - began
    return served


def label_record(publisher: EventPublisher, model: str, stream: Stream, request: int) -> Any:
    truth = ground_truth_pb2.GroundTruth(
        request_id=f"{model}-{request}",
        model=model,
        int64_label=int(stream.labels[TRAIN_ROWS + request]),
        observed_at=timestamp(datetime.now(UTC)),
        source="bench-loop",
    )
    return GROUND_TRUTH.record(truth, source=publisher.source, subject=model, key=truth.request_id)


async def register_first_version(platform: Platform, model: str, stream: Stream) -> None:
    """v1, trained on the rows before the stream, registered `production` with the
    benchmark's training job as its entrypoint (the retrain trigger runs it)."""
    dataset = Dataset(
        stream.feature_names,
        stream.features[:TRAIN_ROWS].astype(np.float64),
        stream.labels[:TRAIN_ROWS],
    )
    path = (platform.data_dir / f"{model}-training.csv").resolve()
    sha = write_csv(dataset, path)
    fitted = await asyncio.to_thread(fit, dataset.features, dataset.labels)
    lineage = registry_types.Lineage(
        dataset_uri=path.as_uri(),
        dataset_sha256=sha,
        triggered_by="manual:bench-loop",
        training_entrypoint=ENTRYPOINT,
    )
    registry = Registry(platform.registry_address, pki().client_tls())
    await asyncio.to_thread(
        register_fitted, model, dataset, fitted, lineage, ["production"], registry
    )


async def pages(call: Callable[[str], Any], items: str) -> list[Any]:
    found: list[Any] = []
    token = ""
    while True:
        response = await call(token)
        found.extend(getattr(response, items))
        token = response.next_page_token
        if not token:
            return found


async def run_loop(
    platform: Platform, addresses: dict[str, str], stream: Stream, args: argparse.Namespace
) -> Loop:
    model = f"loop-{stream.name}-{uuid.uuid4().hex[:6]}"
    await platform.forget_deployments([model])
    tls = pki().client_tls()
    async with (
        aio_channel(addresses["gateway"], tls) as gateway_channel,
        aio_channel(addresses["drift"], tls) as drift_channel,
        aio_channel(addresses["retrain"], tls) as retrain_channel,
    ):
        gateway = inference_grpc.GRPCInferenceServiceStub(gateway_channel)
        drift = drift_grpc.DriftServiceStub(drift_channel)
        retrain = retrain_grpc.RetrainServiceStub(retrain_channel)
        policy = (
            await retrain.GetRetrainPolicy(retrain_pb.GetRetrainPolicyRequest(model=model))
        ).policy
        policy.cooldown.CopyFrom(duration(args.cooldown))
        await retrain.SetRetrainPolicy(retrain_pb.SetRetrainPolicyRequest(policy=policy))
        await register_first_version(platform, model, stream)
        await wait_until_served(gateway, infer_request(model, stream, 0))
        publisher = await platform.publisher("bench-loop")
        served = await drive(
            gateway, publisher, model, stream, args.concurrency, args.label_delay, args.rate
        )
        status = await drift.GetDriftStatus(drift_pb.GetDriftStatusRequest(model=model))
        scored = sum(v.concept_drift.labeled_count for v in status.versions)
        print(f"{stream.name}: the detector had scored {scored:,} labels", file=sys.stderr)
        policy = (
            await retrain.GetRetrainPolicy(retrain_pb.GetRetrainPolicyRequest(model=model))
        ).policy
        policy.enabled = False  # the next stream has the machine to itself
        await retrain.SetRetrainPolicy(retrain_pb.SetRetrainPolicyRequest(policy=policy))
        alerts = await pages(
            lambda token: drift.ListAlerts(
                drift_pb.ListAlertsRequest(model=model, page_size=500, page_token=token)
            ),
            "alerts",
        )
        runs = await pages(
            lambda token: retrain.ListRuns(
                retrain_pb.ListRunsRequest(model=model, page_size=500, page_token=token)
            ),
            "runs",
        )
    sent = served.sent_at.tolist()
    # A change is detected by a drift alert or by a decay from the gate, whichever first.
    signals = [alert.occurred_at for alert in alerts] + [
        run.created_at
        for run in runs
        if run.trigger.kind == retrain_types.TRIGGER_KIND_METRIC_DECAY
    ]
    positions = sorted(bisect.bisect(sent, at.ToDatetime(UTC).timestamp()) for at in signals)
    return Loop(served, positions, runs)


# -- Report ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Detection:
    change: Change
    delay: int | None
    """Requests from the change's midpoint to its first alert; None when none came."""


def detections(changes: list[Change], alerts: list[int]) -> tuple[list[Detection], int]:
    """Each change's detection delay and the number of false alarms (alerts that belong to
    no change: before the first, or more than HORIZON requests after the latest end)."""
    found: list[Detection] = []
    claimed = 0
    for index, change in enumerate(changes):
        next_start = changes[index + 1].start if index + 1 < len(changes) else math.inf
        own = [a for a in alerts if change.start <= a < min(next_start, change.end + HORIZON)]
        claimed += len(own)
        found.append(Detection(change, own[0] - change.position if own else None))
    return found, len(alerts) - claimed


def per_block(correct: np.ndarray) -> list[float]:
    return [float(correct[i : i + BLOCK].mean()) for i in range(0, len(correct), BLOCK)]


def recovery(flywheel: float, static: float, oracle: float) -> float:
    """(flywheel - static) / (oracle - static); NaN when the oracle does no better."""
    gain = oracle - static
    return (flywheel - static) / gain if gain > 0 else float("nan")


def table(rows: Iterable[list[str]], header: list[str]) -> str:
    lines = [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(["---"] + ["---:"] * (len(header) - 1)) + " |",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def turnaround(run: Any, served: Served) -> str:
    """Where a run's time went: from its alert to the run, waiting for data, the job and the
    gate, and from the promotion to the first request its version answered."""

    def at(stamp: Any) -> float:
        return float(stamp.ToDatetime(UTC).timestamp())

    steps = []
    if run.trigger.HasField("occurred_at"):
        steps.append(f"alert to run {at(run.created_at) - at(run.trigger.occurred_at):.1f} s")
    if run.HasField("started_at"):
        steps.append(f"data {at(run.started_at) - at(run.created_at):.1f} s")
        if run.HasField("finished_at"):
            steps.append(f"job and gate {at(run.finished_at) - at(run.started_at):.1f} s")
    answered = np.flatnonzero(served.version == run.candidate_version)
    if run.candidate_version and len(answered) and run.HasField("finished_at"):
        first = int(answered[0])
        steps.append(
            f"promotion to serving {served.sent_at[first] - at(run.finished_at):.1f} s "
            f"(from request {first:,})"
        )
    return ", ".join(steps)


def run_states(runs: list[Any]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for run in runs:
        name = retrain_types.RunState.Name(run.state).removeprefix("RUN_STATE_").lower()
        counts[name] = counts.get(name, 0) + 1
    return counts


def report(stream: Stream, lines: dict[str, np.ndarray], loop: Loop) -> dict[str, float]:
    blocks = {name: per_block(correct) for name, correct in lines.items()}
    change_blocks = {c.position // BLOCK: c.kind for c in stream.changes}
    version = loop.served.version

    def rows() -> Iterator[list[str]]:
        for b in range(len(blocks["static"])):
            served_by = np.bincount(version[b * BLOCK : (b + 1) * BLOCK]).argmax()
            yield [
                f"{b * BLOCK:,}" + (f" ← {change_blocks[b]}" if b in change_blocks else ""),
                *(f"{blocks[name][b]:.3f}" for name in LINES),
                f"v{served_by}",
            ]

    print(f"\n### {stream.name}: accuracy per {BLOCK:,} requests\n")
    print(table(rows(), ["from request", *LINES, "flywheel serves"]))
    overall = {name: float(correct.mean()) for name, correct in lines.items()}
    print(table([["overall", *(f"{overall[n]:.4f}" for n in LINES), ""]], ["", *LINES, ""]))
    found, false_alarms = detections(stream.changes, loop.alert_positions)
    print(f"\n{stream.name}: changes and what the platform did\n")
    print(
        table(
            (
                [
                    f"{d.change.position:,}",
                    d.change.kind,
                    "missed" if d.delay is None else f"{d.delay:,}",
                ]
                for d in found
            ),
            ["change at request", "kind", "detection delay (requests)"],
        )
    )
    states = run_states(loop.runs)
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(states.items())) or "none"
    rate = stream.requests / loop.served.seconds
    print(
        f"\nalerts {len(loop.alert_positions)}, false alarms {false_alarms}, retrain runs "
        f"{len(loop.runs)} ({outcomes}), rejected candidates {states.get('rejected', 0)}; "
        f"{rate:,.0f} requests/s, {len(loop.served.failures)} failed"
    )
    sent = loop.served.sent_at.tolist()
    for run in sorted(loop.runs, key=lambda r: r.created_at.ToDatetime(UTC)):
        at = bisect.bisect(sent, run.created_at.ToDatetime(UTC).timestamp())
        print(
            f"  run at request {at:,} ({run.trigger.reason or run.trigger.triggered_by}): "
            f"{retrain_types.RunState.Name(run.state)}, v{run.candidate_version or '-'}, "
            f"dataset {run.dataset.row_count:,} rows ({run.dataset.logged_row_count:,} logged); "
            f"{run.gate.summary or run.error}\n    {turnaround(run, loop.served)}"
        )
    overall["recovery"] = recovery(overall["flywheel"], overall["static"], overall["oracle"])
    overall["runs"] = len(loop.runs)
    overall["rejected"] = states.get("rejected", 0)
    overall["false_alarms"] = false_alarms
    overall["rate"] = stream.requests / loop.served.seconds
    delays = [d.delay for d in found if d.delay is not None]
    overall["median_delay"] = statistics.median(delays) if delays else float("nan")
    overall["missed"] = sum(1 for d in found if d.delay is None)
    return overall


def summary(results: dict[str, dict[str, float]]) -> None:
    print("\n### Summary: overall accuracy and the recovery ratio\n")
    print(
        table(
            (
                [
                    name,
                    *(f"{r[line]:.4f}" for line in LINES),
                    f"**{r['recovery']:.2f}**",
                    f"{r['median_delay']:,.0f}"
                    + (f" ({r['missed']:.0f} missed)" if r["missed"] else ""),
                    f"{r['false_alarms']:.0f}",
                    f"{r['runs']:.0f}",
                    f"{r['rejected']:.0f}",
                ]
                for name, r in results.items()
            ),
            [
                "stream",
                *LINES,
                "recovery (fw-static)/(oracle-static)",
                "median detection delay",
                "false alarms",
                "retrain runs",
                "rejected",
            ],
        )
    )


def baselines(stream: Stream, loop: Loop, args: argparse.Namespace) -> dict[str, np.ndarray]:
    """Whether each request was answered right, by line."""
    return {
        "static": replay(stream, static_plan()),
        "scheduled": replay(
            stream, scheduled_plan(stream.requests, args.schedule_every, args.label_delay)
        ),
        "flywheel": loop.served.predicted == stream.served_labels,
        "oracle": replay(stream, oracle_plan(stream.changes, args.label_delay)),
        "arf": adaptive_random_forest(stream, args.label_delay),
    }


async def main(args: argparse.Namespace) -> None:
    print(
        f"{args.requests:,} requests per stream, {args.concurrency} in flight; labels "
        f"{args.label_delay} requests late; scheduled retrain every {args.schedule_every:,}; "
        f"oracle and training job learn from {RECENT_ROWS:,} rows.\n"
        f"Time compression: requests at {args.rate:g}/s at most; Flywheel runs with the "
        f"default monitor config and retrain policy except the cooldown, {args.cooldown:g} s "
        "instead of 1 h (the stream runs in minutes, not days)."
    )
    # Drawn before the platform starts: 100,000 rows from river hold the event loop long
    # enough for the services' Kafka sessions and leases to expire.
    streams = [make_stream(name, args.requests) for name in args.streams]
    served: list[tuple[Stream, Loop]] = []
    with tempfile.TemporaryDirectory(prefix="bench-loop-") as folder:
        async with in_process(kafka_address(), Path(folder)) as platform:
            addresses = {
                "registry": (await platform.registry()).grpc.address,
                "deployer": (await platform.deployer(lease=LeaseSettings())).grpc.address,
                "gateway": (await platform.gateway()).grpc.address,
                "drift": (await platform.drift()).grpc.address,
                "retrain": (await platform.retrain(lease=LeaseSettings())).grpc.address,
            }
            for stream in streams:
                loop = await run_loop(platform, addresses, stream, args)
                print(f"{stream.name}: served in {loop.served.seconds:.0f} s", file=sys.stderr)
                served.append((stream, loop))
    # The baselines once the platform has stopped: they would hold the services' event loop.
    results = {
        stream.name: report(stream, baselines(stream, loop, args), loop) for stream, loop in served
    }
    summary(results)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000, help="per stream")
    parser.add_argument("--streams", nargs="+", choices=STREAMS, default=list(STREAMS))
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--label-delay", type=int, default=500, help="in requests")
    parser.add_argument("--schedule-every", type=int, default=5000, help="in requests")
    parser.add_argument(
        "--rate", type=float, default=100.0, help="requests/s at most (0: as fast as served)"
    )
    parser.add_argument("--cooldown", type=float, default=10.0, help="retrain cooldown, s")
    return parser.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse()))
