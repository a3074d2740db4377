"""Two drift replicas share the stream through Kafka's consumer group and their state
through PostgreSQL: one is killed with SIGKILL mid-stream and the other takes its
partitions over from their checkpoints; restarted, it takes some back; then the other
stalls (SIGSTOP) past its session and is fenced out of the partitions it held. No window
is lost or counted twice, and ground truth meets its prediction whichever replica holds
it."""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections import Counter
from pathlib import Path

from aiokafka.partitioner import murmur2

from flywheel.drift.v1 import drift_pb2 as drift_api
from flywheel.drift.v1 import drift_pb2_grpc as drift_grpc
from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel.drift.v1.ground_truth_pb2 import GroundTruth
from flywheel_common.dead_letters import REASON
from flywheel_common.events import header
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import DatabaseSettings, TelemetrySettings
from flywheel_common.topics import DLQ, GROUND_TRUTH, MODEL_METRICS, PREDICTIONS
from flywheel_drift.settings import DriftSettings
from flywheel_testing.backends import reset_postgres, unused_port
from flywheel_testing.kafka import read_topic
from flywheel_testing.platform import in_process
from flywheel_testing.predictions import prediction_log
from flywheel_testing.processes import service_process
from flywheel_testing.tls import grpc_settings, secure_channel

WINDOW = 50
PER_MODEL = 300
LABELED = 100  # the first two windows of each model, labelled after the kill
SESSION_TIMEOUT = 6.0  # the drift stream's Kafka session: the broker's shortest


def one_model_per_partition(prefix: str) -> list[str]:
    """Model names whose predictions land on each partition once (the gateway's key
    partitioner), so both replicas hold some."""
    names: dict[int, str] = {}
    index = 0
    while len(names) < PREDICTIONS.partitions:
        name = f"{prefix}-{index}"
        names.setdefault((murmur2(name.encode()) & 0x7FFFFFFF) % PREDICTIONS.partitions, name)
        index += 1
    return [names[partition] for partition in sorted(names)]


async def windows_of(bootstrap: str, models: list[str]) -> dict[str, list[tuple[str, int, int]]]:
    """Each model's published windows as (ce_id, index, requests), by model."""
    records = await read_topic(
        bootstrap, MODEL_METRICS.name, at_least=0, partitions=3, timeout_ms=3000
    )
    found: dict[str, list[tuple[str, int, int]]] = {model: [] for model in models}
    for record in records:
        model = (record.key or b"").decode()
        if model in found:
            window = drift_events.ModelMetricsWindow.FromString(record.value)
            found[model].append(
                (header(record.headers, "ce_id") or "", window.window.index, window.request_count)
            )
    return found


async def test_a_replica_killed_mid_stream_hands_its_partitions_over_losing_nothing(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    await reset_postgres(postgres_url)
    models = one_model_per_partition(f"replica-{uuid.uuid4().hex[:6]}")
    ports = [unused_port(), unused_port()]
    async with in_process(kafka_bootstrap, tmp_path) as platform:
        publisher = await platform.publisher("tests")
        base = platform.settings(
            DriftSettings,
            "drift",
            database=DatabaseSettings(url=postgres_url),
            telemetry=TelemetrySettings(metrics_port=-1, log_level="ERROR"),
            window_size=WINDOW,
            batch_size=20,
            prediction_batch_records=5,
            registry_address="127.0.0.1:1",  # no reference: windows still count
            session_timeout_seconds=SESSION_TIMEOUT,
        )
        replicas = [
            base.model_copy(update={"grpc": grpc_settings(port=port), "data_dir": tmp_path / name})
            for port, name in zip(ports, "ab", strict=True)
        ]
        first, second = await asyncio.gather(
            *(service_process("flywheel_drift", replica) for replica in replicas)
        )
        restarted = None
        try:
            await send(publisher, models, 0, 120)
            await until_windows(kafka_bootstrap, models, 2)
            sending = asyncio.create_task(send(publisher, models, 120, 220))
            await asyncio.sleep(0.5)  # killed while batches are in flight
            first.send_signal(signal.SIGKILL)
            await first.wait()
            await sending
            # The survivor takes the dead replica's partitions over after its session
            # times out; labels for predictions either replica took before the kill.
            await label(publisher, models, LABELED)
            unroutable = f"no-model-{uuid.uuid4().hex[:6]}"  # a label that names no model
            await publisher.publish(
                GROUND_TRUTH, GroundTruth(request_id=unroutable, int64_label=1), subject=unroutable
            )
            restarted = await service_process("flywheel_drift", replicas[0])  # rebalances
            # The survivor stalls (SIGSTOP) past its session while predictions come: the
            # restarted replica claims its partitions; woken up, the stalled one finds its
            # claims gone, its batches in flight refused, and rejoins.
            sending = asyncio.create_task(send(publisher, models, 220, 260))
            second.send_signal(signal.SIGSTOP)
            await asyncio.sleep(SESSION_TIMEOUT + 3)
            second.send_signal(signal.SIGCONT)
            await sending
            await send(publisher, models, 260, PER_MODEL)
            await until_windows(kafka_bootstrap, models, PER_MODEL // WINDOW)
            await asyncio.sleep(2.0)  # anything duplicated would have arrived by now
            published = await windows_of(kafka_bootstrap, models)
            statuses = await until_labeled(ports, models)
        finally:
            for process in (first, second, restarted):
                if process is not None and process.returncode is None:
                    process.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(process.wait(), 60)

    for model, windows in published.items():
        unique = {ce: (index, requests) for ce, index, requests in windows}  # dedupe by ce_id
        indices = Counter(index for index, _ in unique.values())
        assert sorted(indices) == list(range(PER_MODEL // WINDOW)), (model, indices)
        assert all(count == 1 for count in indices.values()), (model, indices)
        assert all(requests == WINDOW for _, requests in unique.values()), model
    # Both replicas answer for every model, from the checkpoints both write: each label
    # counted once, and every one right.
    assert statuses[0] == statuses[1]
    assert statuses[0] == {model: (LABELED, 0.0) for model in models}
    dead = await read_topic(kafka_bootstrap, DLQ.name, at_least=0, partitions=3, timeout_ms=3000)
    reasons = [
        header(record.headers, REASON) or ""
        for record in dead
        if unroutable.encode() in (record.value or b"")
    ]
    assert len(reasons) == 1, reasons
    assert "`model` is empty" in reasons[0]


async def send(publisher: EventPublisher, models: list[str], start: int, end: int) -> None:
    for chunk in range(start, end, 10):
        await publisher.send(
            [
                PREDICTIONS.record(prediction_log(model, i), source="tests", subject=model)
                for model in models
                for i in range(chunk, min(chunk + 10, end))
            ]
        )
        await asyncio.sleep(0.02)


async def label(publisher: EventPublisher, models: list[str], count: int) -> None:
    await publisher.send(
        [
            GROUND_TRUTH.record(
                GroundTruth(request_id=f"{model}-{i}", model=model, int64_label=i % 2),
                source="tests",
                subject=f"{model}-{i}",
            )
            for model in models
            for i in range(count)
        ]
    )


async def until_windows(bootstrap: str, models: list[str], count: int) -> None:
    async with asyncio.timeout(120):
        while any(
            len({index for _, index, _ in windows}) < count
            for windows in (await windows_of(bootstrap, models)).values()
        ):
            await asyncio.sleep(0.5)


async def until_labeled(ports: list[int], models: list[str]) -> list[dict[str, tuple[int, float]]]:
    """What each replica answers, once they agree that every label was counted."""
    answers: list[dict[str, tuple[int, float]]] = []
    try:
        async with asyncio.timeout(60):
            while True:
                answers = [await status(port, models) for port in ports]
                if all(labeled >= LABELED for labeled, _ in answers[-1].values()) and (
                    answers[0] == answers[1]
                ):
                    return answers
                await asyncio.sleep(0.5)
    except TimeoutError:
        raise AssertionError(f"labels not all counted: {answers}") from None


async def status(port: int, models: list[str]) -> dict[str, tuple[int, float]]:
    """(labels counted, error estimate) of each model's version, as one replica answers."""
    async with secure_channel(f"127.0.0.1:{port}") as channel:
        stub = drift_grpc.DriftServiceStub(channel)
        found = {}
        for model in models:
            response = await stub.GetDriftStatus(drift_api.GetDriftStatusRequest(model=model))
            (version,) = response.versions
            concept = version.concept_drift
            found[model] = (concept.labeled_count, concept.error_estimate)
    return found
