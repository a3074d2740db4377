"""Benchmark: prediction logs per second through the drift detector, and the time per window
of the same drift tests in Evidently and alibi-detect.

    make bench-drift          # starts Kafka if needed
    uv run python bench/drift.py --events 100000 [--throughput-only]

Throughput: prediction logs with 30 float features are published to a fresh topic first,
packed per model as the gateway packs them (`--logs-per-record`), or one log per record as
data platforms produce them, and then once more one log per record with each log's ground
truth published alongside, one label per record (so labels arrive at the rate of
predictions). The detector's stream (in this process, one core) reads them from the broker
in batches, fills windows of 1,000 per model version and runs every test on each window,
and routes and joins every label, until the last window closed and the last label met its
prediction. Printed as prediction logs per second (targets: 50,000 packed, 20,000 at one
log or label per record) beside a faust stream with an agent that does nothing (faust's
own ceiling on this machine, in records per second, measured in the same run: the machine
is shared, so read the ratios). Beside each rate, the CPU time this process spent (all its
threads: faust's consumer, SQLite's) per record for faust, per log for the detector (per
log and its label in the labelled run), which other work on the machine moves far less.

Time per window, same arrays (a 5,000-row reference, windows of 1,000 x 30): Flywheel's data
drift (KS per feature with Benjamini-Hochberg, PSI, Wasserstein, Jensen-Shannon) against
Evidently's `DataDriftPreset` and alibi-detect's `KSDrift` (Bonferroni); and beside it, what
the multivariate test (PCA reconstruction error, on by default) adds to Flywheel's (medians
over five passes, the two alternating window by window). The two others run in a virtualenv
of their own, built with uv from bench/drift_refs/requirements.txt into .run/bench/drift-refs
on first use.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import faust
import numpy as np
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from harness import reference_venv

from flywheel.common.v1.types_pb2 import Tensor
from flywheel.drift.v1.ground_truth_pb2 import GroundTruth
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.db import Database
from flywheel_common.events import OutgoingRecord
from flywheel_common.kafka_security import kafka_client_options
from flywheel_common.migrations import upgrade
from flywheel_common.outbox import Outbox, OutboxRelay
from flywheel_common.prediction_logs import pack
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings
from flywheel_common.timestamps import duration, now
from flywheel_common.topics import GROUND_TRUTH, PROTOBUF, Cleanup, TopicSpec, ensure_topics
from flywheel_drift.app import MIGRATIONS, tune_garbage_collection
from flywheel_drift.detection import ALL_TESTS, DriftTest, Monitor, data_drift
from flywheel_drift.domain import ModelMonitor
from flywheel_drift.faust_credentials import faust_credentials
from flywheel_drift.handlers import Detector
from flywheel_drift.profiles import ReferenceProfile, build_profile
from flywheel_drift.settings import DriftSettings
from flywheel_drift.stream import DriftStream
from flywheel_drift.windows import WindowPolicy

HERE = Path(__file__).parent
REFS_VENV = HERE.parent / ".run" / "bench" / "drift-refs"
FEATURES = 30
WINDOW = 1000

REFERENCE_RUNNER = """
import json, sys, time, warnings
import numpy as np
warnings.filterwarnings("ignore")
reference = np.load(sys.argv[1]); windows = np.load(sys.argv[2])
out = {}

from alibi_detect.cd import KSDrift
detector = KSDrift(reference, p_val=0.01, correction="bonferroni")
detector.predict(windows[0])
started = time.perf_counter()
for window in windows:
    detector.predict(window)
out["alibi-detect KSDrift"] = (time.perf_counter() - started) / len(windows)

import pandas as pd
from evidently import Report
from evidently.presets import DataDriftPreset
columns = [f"f{i}" for i in range(reference.shape[1])]
ref = pd.DataFrame(reference, columns=columns)
report = Report([DataDriftPreset()])
report.run(pd.DataFrame(windows[0], columns=columns), ref)
started = time.perf_counter()
for window in windows:
    report.run(pd.DataFrame(window, columns=columns), ref)
out["Evidently DataDriftPreset"] = (time.perf_counter() - started) / len(windows)
print(json.dumps(out))
"""


def refs_python() -> Path:
    return reference_venv(REFS_VENV, HERE / "drift_refs" / "requirements.txt") / "python"


def prediction(model: str, row: np.ndarray, index: int) -> PredictionLog:
    return PredictionLog(
        request_id=f"r{index}",
        model=model,
        version=1,
        inputs=[Tensor(name="features", datatype="FP32", shape=[1, FEATURES], data=row.tobytes())],
        outputs=[
            Tensor(
                name="label",
                datatype="INT64",
                shape=[1],
                data=np.array([index % 3], np.int64).tobytes(),
            )
        ],
        latency=duration(0.002),
        received_at=now(),
    )


class Topics(NamedTuple):
    predictions: TopicSpec
    labels: TopicSpec
    labels_by_model: TopicSpec


async def fresh_topics(bootstrap: str, partitions: int = 3) -> Topics:
    suffix = uuid.uuid4().hex[:8]
    specs = Topics(
        TopicSpec(f"bench.predictions.{suffix}", partitions, Cleanup.DELETE, PROTOBUF, "model"),
        TopicSpec(
            f"bench.ground-truth.{suffix}", partitions, Cleanup.DELETE, PROTOBUF, "request id"
        ),
        TopicSpec(
            f"bench.ground-truth-by-model.{suffix}", partitions, Cleanup.DELETE, PROTOBUF, "model"
        ),
    )
    admin = AIOKafkaAdminClient(**kafka_client_options(KafkaSettings(bootstrap_servers=bootstrap)))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(s.name, s.partitions, 1) for s in specs])
    finally:
        await admin.close()
    return specs


MODELS = [f"bench-{i}" for i in range(3)]  # one per partition, as traffic spreads


def label(log: PredictionLog) -> OutgoingRecord:
    """The ground truth of a prediction, one label per record as data platforms send it."""
    truth = GroundTruth(request_id=log.request_id, model=log.model, int64_label=1)
    return GROUND_TRUTH.record(truth, source="bench", subject=log.model, key=log.request_id)


async def fill(bootstrap: str, events: int, per_record: int, labelled: bool = False) -> Topics:
    """Fresh topics holding `events` prediction logs, published before anything is timed,
    `per_record` logs of one model per record; when `labelled`, each log's label too, one
    per record, published alongside the predictions (the labels' topic keeps pace with them)."""
    topics = await fresh_topics(bootstrap)
    publisher = EventPublisher(KafkaSettings(bootstrap_servers=bootstrap, linger_ms=20), "bench")
    await publisher.start()
    rows = np.random.default_rng(0).normal(size=(events, FEATURES)).astype(np.float32)
    for start in range(0, events, 6000):
        logs = [
            prediction(MODELS[i % 3], rows[i], i) for i in range(start, min(start + 6000, events))
        ]
        packed = pack(logs, source="bench", per_record=per_record)
        records = [replace(record, topic=topics.predictions.name) for record, _ in packed]
        if labelled:
            records += [replace(label(log), topic=topics.labels.name) for log in logs]
        await publisher.send(records)
    await publisher.stop()
    return topics


class Measured(NamedTuple):
    """A timed run: items per second, and this process's CPU time (all its threads) per
    item, which a machine loaded by other work changes far less than the rate."""

    rate: float
    cpu_us: float


async def faust_ceiling(bootstrap: str, events: int) -> Measured:
    """A faust stream with an agent that does nothing: faust's own rate, in records per
    second (the detector reads records a fetch at a time instead of as faust events)."""
    predictions = (await fill(bootstrap, events, per_record=1)).predictions
    app = faust.App(
        f"bench-faust-{uuid.uuid4().hex[:6]}",
        broker=f"kafka://{bootstrap}",
        broker_credentials=faust_credentials(KafkaSettings(bootstrap_servers=bootstrap)),
        store="memory://",
        datadir=tempfile.mkdtemp(prefix="bench-faust-"),
        web_enabled=False,
        topic_allow_declare=False,
        consumer_auto_offset_reset="earliest",
        broker_max_poll_records=WINDOW * 4,
        consumer_max_fetch_size=8 * 1024 * 1024,
        stream_buffer_maxsize=WINDOW * 8,
    )
    topic = app.topic(
        predictions.name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    seen = 0
    first = first_cpu = 0.0

    async def count(stream: Any) -> AsyncIterator[None]:
        nonlocal seen, first, first_cpu
        async for batch in stream.take_events(WINDOW, within=0.2):
            if not seen:
                first, first_cpu = time.perf_counter(), time.process_time()
            seen += len(batch)
            yield None

    app.agent(topic, name="bench.count")(count)
    await app.start()
    async with asyncio.timeout(600):
        while seen < events:
            await asyncio.sleep(0.01)
    counted = events - WINDOW
    measured = Measured(
        counted / (time.perf_counter() - first),
        (time.process_time() - first_cpu) / counted * 1e6,
    )
    await app.stop()
    return measured


async def throughput(
    bootstrap: str, events: int, reference: np.ndarray, per_record: int, labelled: bool = False
) -> Measured:
    """Prediction logs per second through the detector, until every window closed and,
    when `labelled`, every label met its prediction (as many labels per second then)."""
    topics = await fill(bootstrap, events, per_record, labelled)
    profiles = {m: build_profile(m, 1, reference) for m in MODELS}

    async def profile(model: str, version: int) -> ReferenceProfile | None:
        return profiles[model]

    monitor = ModelMonitor(window=WindowPolicy(size=WINDOW))  # as the service's configs, kept

    def new_detector() -> Detector:
        return Detector(profile, lambda _: monitor)

    tune_garbage_collection(DriftSettings().gc_first_generation)  # as the service does
    # The detector publishes with the service's own producer settings, through its outbox,
    # and checkpoints every batch in its own SQLite database, as the service does.
    detector_publisher = EventPublisher(KafkaSettings(bootstrap_servers=bootstrap), "bench")
    await detector_publisher.start()
    folder = tempfile.mkdtemp()
    database = Database(f"sqlite+aiosqlite:///{folder}/drift.db")
    await upgrade(database, MIGRATIONS)
    outbox = Outbox(source="bench")
    relay = OutboxRelay(database, outbox, detector_publisher)
    await relay.start()
    stream = DriftStream(
        KafkaSettings(bootstrap_servers=bootstrap),
        f"bench-drift-{uuid.uuid4().hex[:6]}",
        new_detector,
        detector_publisher,
        database,
        outbox,
        replica="bench",
        batch_size=WINDOW,
        # Records packed by the gateway: the service's default batch of records. One log
        # per record: batches of 1,000 records, as the service took before packing.
        prediction_batch_size=DriftSettings().prediction_batch_records if per_record > 1 else 1000,
        predictions_topic=topics.predictions,
        labels_topic=topics.labels,
        labels_by_model_topic=topics.labels_by_model,
        start_from="earliest",
    )
    expected = sum(len(range(i, events, 3)) // WINDOW for i in range(3))
    await stream.start()
    async with asyncio.timeout(600):
        while not stream.processed:  # the clock starts with the first batch, not at start-up
            await asyncio.sleep(0.001)
        started, started_cpu, first = time.perf_counter(), time.process_time(), stream.processed
        while sum(
            s.windows_closed for s in stream.partitions.every_status()
        ) < expected or stream.labelled < (events if labelled else 0):
            await asyncio.sleep(0.02)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - started_cpu
    processed = stream.processed - first
    await stream.stop()
    await relay.stop()
    await database.stop()
    await detector_publisher.stop()
    shutil.rmtree(folder, ignore_errors=True)
    return Measured(processed / elapsed, cpu / processed * 1e6)


def flywheel_per_window(
    reference: np.ndarray, windows: np.ndarray, rounds: int = 5
) -> tuple[float, float]:
    """Median seconds per window of data_drift with the per-feature tests, and with the
    multivariate test too (the default): the two alternate window by window, so a machine
    shared with other work slows both alike."""
    profile = build_profile("bench", 1, reference)
    per_feature = Monitor(tests=ALL_TESTS - {DriftTest.PCA_RECONSTRUCTION})
    monitors = (per_feature, Monitor())
    data_drift(profile, windows[0], Monitor())
    seconds: tuple[list[float], list[float]] = ([], [])
    for _ in range(rounds):
        for window in windows:
            for monitor, spent in zip(monitors, seconds, strict=True):
                started = time.perf_counter()
                data_drift(profile, window, monitor)
                spent.append(time.perf_counter() - started)
    return float(np.median(seconds[0])), float(np.median(seconds[1]))


def reference_timings(reference: np.ndarray, windows: np.ndarray) -> dict[str, float]:
    """Seconds per window of Evidently and alibi-detect, run in their own virtualenv."""
    with tempfile.TemporaryDirectory() as folder:
        np.save(f"{folder}/reference.npy", reference)
        np.save(f"{folder}/windows.npy", windows)
        script = Path(folder) / "refs.py"
        script.write_text(REFERENCE_RUNNER)
        result = subprocess.run(
            [str(refs_python()), str(script), f"{folder}/reference.npy", f"{folder}/windows.npy"],
            check=True,
            capture_output=True,
            text=True,
        )
    timings: dict[str, float] = json.loads(result.stdout.strip().splitlines()[-1])
    return timings


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("FLYWHEEL_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    )
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--logs-per-record", type=int, default=100)
    parser.add_argument(
        "--throughput-only", action="store_true", help="leave out the per-window comparison"
    )
    args = parser.parse_args()
    await ensure_topics(KafkaSettings(bootstrap_servers=args.bootstrap))
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(5000, FEATURES))
    windows = rng.normal(size=(args.windows, WINDOW, FEATURES))
    windows[:, :, 7] += 0.5

    ceiling = await faust_ceiling(args.bootstrap, args.events)
    single = await throughput(args.bootstrap, args.events, reference, per_record=1)
    labelled = await throughput(args.bootstrap, args.events, reference, 1, labelled=True)
    packed = await throughput(args.bootstrap, args.events, reference, args.logs_per_record)

    print(f"\ndrift: {FEATURES} float features, windows of {WINDOW}, reference of 5,000 rows")
    print(f"{'from Kafka, one core':<58}{'per s':>9}{'vs faust':>10}{'target':>8}{'vs it':>8}"
          f"{'CPU us':>9}")  # fmt: skip
    rows = [
        ("faust stream doing nothing, records", ceiling, 0),
        ("drift detector, logs, 1 log per record", single, 20_000),
        ("drift detector, logs, and as many labels, 1 per record", labelled, 20_000),
        (f"drift detector, logs, {args.logs_per_record} logs per record", packed, 50_000),
    ]
    for name, (rate, cpu_us), target in rows:
        against = f"{target:>8,}{rate / target:>7.2f}x" if target else " " * 16
        print(f"{name:<58}{rate:>9,.0f}{rate / ceiling.rate:>9.2f}x{against}{cpu_us:>9.1f}")
    if args.throughput_only:
        return
    ours, with_pca = flywheel_per_window(reference, windows)
    others = reference_timings(reference, windows)
    print(f"\n{'time per window, same arrays':<44}{'ms':>9}{'vs Flywheel':>13}")
    print(f"{'Flywheel data_drift (KS+BH, PSI, W1, JS)':<44}{ours * 1000:>9.1f}{1:>12.1f}x")
    print(f"{'  + PCA reconstruction (the default)':<44}{with_pca * 1000:>9.1f}"
          f"{with_pca / ours:>12.2f}x")  # fmt: skip
    for name, seconds in others.items():
        print(f"{name:<44}{seconds * 1000:>9.1f}{seconds / ours:>12.1f}x")


if __name__ == "__main__":
    asyncio.run(main())
