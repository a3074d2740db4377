"""A detector killed with SIGKILL mid-stream neither loses nor double-counts a window, and
the predictions it logged before still join the ground truth that comes after."""

from __future__ import annotations

import asyncio
import signal
import uuid
from pathlib import Path

from flywheel.drift.v1 import drift_pb2 as drift_api
from flywheel.drift.v1 import drift_pb2_grpc as drift_grpc
from flywheel.drift.v1 import events_pb2 as drift_events
from flywheel.drift.v1.ground_truth_pb2 import GroundTruth
from flywheel_common.events import header
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import TelemetrySettings
from flywheel_common.topics import GROUND_TRUTH, MODEL_METRICS, PREDICTIONS
from flywheel_drift.settings import DriftSettings
from flywheel_testing.backends import unused_port
from flywheel_testing.kafka import read_topic
from flywheel_testing.platform import in_process
from flywheel_testing.predictions import prediction_log
from flywheel_testing.processes import service_process
from flywheel_testing.tls import grpc_settings, secure_channel

WINDOW = 100
TOTAL = 500
LABELED = 200  # the requests of the first two windows, closed long before the kill


async def windows_of(
    bootstrap: str, model: str
) -> list[tuple[str, drift_events.ModelMetricsWindow]]:
    records = await read_topic(
        bootstrap, MODEL_METRICS.name, at_least=0, partitions=3, timeout_ms=3000
    )
    return [
        (header(r.headers, "ce_id") or "", drift_events.ModelMetricsWindow.FromString(r.value))
        for r in records
        if r.key == model.encode()
    ]


async def test_a_detector_killed_mid_stream_neither_loses_nor_double_counts(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    model = f"restart-{uuid.uuid4().hex[:8]}"
    port = unused_port()
    async with in_process(kafka_bootstrap, tmp_path) as platform:
        publisher = await platform.publisher("tests")
        settings = platform.settings(
            DriftSettings,
            "drift",
            grpc=grpc_settings(port=port),
            telemetry=TelemetrySettings(metrics_port=-1, log_level="ERROR"),
            window_size=WINDOW,
            batch_size=15,
            registry_address="127.0.0.1:1",  # no reference: windows still count
            # The restarted detector gets the partitions once the killed one's session
            # expires: the broker's shortest session, where 10 s would only add waiting.
            session_timeout_seconds=6.0,
        )
        published = await kill_mid_stream(settings, publisher, model, kafka_bootstrap)

    unique = {ce: window for ce, window in published}  # consumers dedupe on ce_id
    indices = sorted(window.window.index for window in unique.values())
    assert indices == list(range(TOTAL // WINDOW)), indices
    assert all(window.request_count == WINDOW for window in unique.values())
    assert sum(window.request_count for window in unique.values()) == TOTAL
    assert sum(window.label_metrics.labeled_count for window in unique.values()) == LABELED
    assert all(
        window.label_metrics.accuracy == 1.0
        for window in unique.values()
        if window.label_metrics.labeled_count
    )


async def kill_mid_stream(
    settings: DriftSettings, publisher: EventPublisher, model: str, bootstrap: str
) -> list[tuple[str, drift_events.ModelMetricsWindow]]:
    """Stream TOTAL logs through a detector process killed with SIGKILL mid-batch and
    restarted, label the first LABELED after the restart; every window it published."""
    first = await service_process("flywheel_drift", settings)
    second = None
    try:

        async def send(start: int, end: int) -> None:
            for chunk in range(start, end, 10):
                records = [
                    PREDICTIONS.record(prediction_log(model, i), source="tests", subject=model)
                    for i in range(chunk, min(chunk + 10, end))
                ]
                await publisher.send(records)
                await asyncio.sleep(0.02)

        await send(0, 250)
        async with asyncio.timeout(60):
            while len(await windows_of(bootstrap, model)) < 2:
                await asyncio.sleep(0.2)
        sending = asyncio.create_task(send(250, 380))
        await asyncio.sleep(0.4)  # killed while a batch is in flight
        first.send_signal(signal.SIGKILL)
        await first.wait()
        await sending

        second = await service_process("flywheel_drift", settings)
        # Ground truth for predictions the first detector took long before it died: they
        # wait in its checkpoint, not in the new process's memory, and must still join.
        await publisher.send(
            [
                GROUND_TRUTH.record(
                    GroundTruth(request_id=f"{model}-{i}", model=model, int64_label=i % 2),
                    source="tests",
                    subject=f"{model}-{i}",
                )
                for i in range(LABELED)
            ]
        )
        async with asyncio.timeout(60):
            while await labeled(settings.grpc.port, model) < LABELED:
                await asyncio.sleep(0.2)
        await send(380, TOTAL)
        async with asyncio.timeout(120):
            while len({ce for ce, _ in await windows_of(bootstrap, model)}) < TOTAL // WINDOW:
                await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)  # anything duplicated would have arrived by now
        return await windows_of(bootstrap, model)
    finally:
        for process in (first, second):
            if process is not None and process.returncode is None:
                process.send_signal(signal.SIGTERM)
                await asyncio.wait_for(process.wait(), 60)


async def labeled(port: int, model: str) -> int:
    async with secure_channel(f"127.0.0.1:{port}") as channel:
        response = await drift_grpc.DriftServiceStub(channel).GetDriftStatus(
            drift_api.GetDriftStatusRequest(model=model)
        )
    return sum(status.concept_drift.labeled_count for status in response.versions)
