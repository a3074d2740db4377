"""The detector: idle time windows close on their own; labels that came first still alert;
windows that close before their reference arrives are tested when it does."""

from __future__ import annotations

import asyncio

import numpy as np
from google.protobuf.message import Message

from flywheel.common.v1.types_pb2 import Tensor
from flywheel.drift.v1 import events_pb2 as events
from flywheel.drift.v1 import types_pb2 as types
from flywheel.drift.v1.ground_truth_pb2 import GroundTruth
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.prediction_logs import ground_truth_label
from flywheel_common.timestamps import epoch
from flywheel_drift import converters, snapshots
from flywheel_drift.detection import AlarmPolicy, Monitor
from flywheel_drift.domain import DriftEvent, ModelMonitor
from flywheel_drift.handlers import Detector
from flywheel_drift.profiles import ReferenceProfile, build_profile
from flywheel_drift.windows import WindowPolicy


async def no_profile(model: str, version: int) -> ReferenceProfile | None:
    return None


def logged(request: str, at: float, label: int = 1) -> PredictionLog:
    return PredictionLog(
        request_id=request,
        model="iris",
        version=1,
        inputs=[
            Tensor(name="x", datatype="FP32", shape=[1, 2], data=np.ones(2, np.float32).tobytes())
        ],
        outputs=[Tensor(name="label", datatype="INT64", shape=[1], data=np.int64(label).tobytes())],
        received_at=epoch(at),
    )


def published(events: list[DriftEvent]) -> list[tuple[Message, str]]:
    """The events as the stream stages them: message and subject."""
    return [(converters.event_message(event), event.model) for event in events]


def observe(detector: Detector, logs: list[PredictionLog]) -> list[tuple[Message, str]]:
    return published(detector.observe(converters.batches(logs)))


def label(detector: Detector, truth: GroundTruth, at: float) -> list[tuple[Message, str]]:
    value = ground_truth_label(truth)
    assert value is not None
    return published(detector.label(truth.request_id, value, at))


async def test_an_idle_time_window_closes_once_its_end_has_passed() -> None:
    detector = Detector(no_profile, lambda _: ModelMonitor(window=WindowPolicy(seconds=60)))
    assert observe(detector, [logged(f"r{i}", 600.0 + i) for i in range(5)]) == []
    detector.changed.clear()
    assert detector.flush(now=659.0) == []
    [(metrics, subject)] = published(detector.flush(now=660.0))
    assert isinstance(metrics, events.ModelMetricsWindow)
    assert (subject, metrics.window.index, metrics.request_count) == ("iris", 10, 5)
    assert metrics.window.kind == types.WINDOW_KIND_TIME
    assert detector.changed == {("iris", 1)}  # the stream checkpoints the closed window
    assert detector.flush(now=700.0) == []


async def test_labels_that_arrive_before_their_predictions_still_raise_concept_drift() -> None:
    detector = Detector(no_profile, lambda _: ModelMonitor(concept_detector="adwin"))
    # Ground truth first: right for the first 300 predictions, wrong for the next 300.
    for i in range(600):
        truth = GroundTruth(request_id=f"r{i}", model="iris", int64_label=1 if i < 300 else 0)
        assert label(detector, truth, at=1000.0) == []
    outgoing = observe(detector, [logged(f"r{i}", 1000.0 + i / 100) for i in range(600)])
    alerts = [m for m, _ in outgoing if isinstance(m, events.DriftAlert)]
    assert alerts
    assert all(list(a.kinds) == [types.ALERT_KIND_CONCEPT] for a in alerts)
    # The change began with prediction r300, made at 1003.0; the alert says so, within the
    # few dozen predictions the detector cannot tell apart.
    began = alerts[0].change_began_at.ToMicroseconds() / 1e6
    assert 1002.5 <= began <= 1003.5


def logged_row(request: str, at: float, row: np.ndarray) -> PredictionLog:
    log = logged(request, at)
    log.inputs[0].data = row.astype(np.float32).tobytes()
    return log


async def test_windows_closed_before_the_reference_loads_are_tested_once_it_does() -> None:
    """Three windows of drifted inputs close while the reference is on its way: their
    metrics go out at once, their data tests when the reference arrives, each window once,
    and a restart in between loses none of them."""
    rng = np.random.default_rng(11)
    profile = build_profile("iris", 1, rng.normal(size=(2000, 2)))
    arrived = asyncio.Event()

    async def reference_on_its_way(model: str, version: int) -> ReferenceProfile | None:
        await arrived.wait()
        return profile

    def monitors(_: str) -> ModelMonitor:
        return ModelMonitor(window=WindowPolicy(size=100))

    detector = Detector(reference_on_its_way, monitors)
    shifted = rng.normal(1.0, 1.0, size=(300, 2))
    logs = [logged_row(f"r{i}", 1000.0 + i, row) for i, row in enumerate(shifted)]
    closed = observe(detector, logs)
    assert [type(m) for m, _ in closed] == [events.ModelMetricsWindow] * 3

    # A replica taking over the partition now resumes from the checkpoint, the three
    # windows still waiting; its reference is there at once.
    checkpoint = snapshots.decode("iris", 1, snapshots.encode(detector.snapshot("iris", 1)))
    assert [window.index for window in checkpoint.untested] == [0, 1, 2]

    async def reference_at_once(model: str, version: int) -> ReferenceProfile | None:
        return profile

    successor = Detector(reference_at_once, monitors)
    successor.restore("iris", 1, checkpoint)
    for resumed in (detector, successor):
        if resumed is detector:
            arrived.set()
        await asyncio.sleep(0.01)  # the reference task finishes
        tested = published(resumed.flush(now=2000.0))
        alerts = [m for m, _ in tested if isinstance(m, events.DriftAlert)]
        assert sorted(a.window.index for a in alerts) == [0, 1, 2]
        assert all(a.alert_id.endswith(":late-drift") for a in alerts)
        assert all(types.ALERT_KIND_DATA in a.kinds for a in alerts)
        assert resumed.flush(now=2001.0) == []  # each window tested once


def test_k_of_n_counts_drifted_windows_ending_with_the_closing_one() -> None:
    two_of_three = AlarmPolicy(drifted_windows=2, of_windows=3)
    assert not two_of_three.alarms([True])
    assert two_of_three.alarms([True, True])
    assert two_of_three.alarms([True, False, True])
    assert not two_of_three.alarms([True, False, False, True])  # the first left the three
    assert not two_of_three.alarms([True, True, False])  # the closing window is clean
    assert AlarmPolicy().alarms([False, True])


async def test_an_alarm_policy_alerts_on_the_second_of_three_drifted_windows_only() -> None:
    """2 of 3: a lone drifted window raises nothing, the second within three windows alerts
    (for its own window), and the count survives a restart in between."""
    rng = np.random.default_rng(5)
    profile = build_profile("iris", 1, rng.normal(size=(2000, 2)))

    async def reference(model: str, version: int) -> ReferenceProfile | None:
        return profile

    def monitors(_: str) -> ModelMonitor:
        policy = AlarmPolicy(drifted_windows=2, of_windows=3)
        return ModelMonitor(window=WindowPolicy(size=100), detection=Monitor(alarm=policy))

    detector = Detector(reference, monitors)
    detector.state("iris", 1)
    await asyncio.sleep(0.01)  # the reference is loaded before traffic

    def window(first: int, shift: float) -> list[PredictionLog]:
        rows = rng.normal(shift, 1.0, size=(100, 2))
        return [logged_row(f"r{first + i}", 1000.0 + first + i, row) for i, row in enumerate(rows)]

    def alerts(outgoing: list[tuple[Message, str]]) -> list[int]:
        return [m.window.index for m, _ in outgoing if isinstance(m, events.DriftAlert)]

    assert alerts(observe(detector, window(0, 1.5))) == []  # drifted, alone so far
    checkpoint = snapshots.decode("iris", 1, snapshots.encode(detector.snapshot("iris", 1)))
    assert checkpoint.drifted == (True,)
    successor = Detector(reference, monitors)
    successor.restore("iris", 1, checkpoint)
    await asyncio.sleep(0.01)
    assert alerts(observe(successor, window(100, 0.0))) == []  # clean
    assert alerts(observe(successor, window(200, 1.5))) == [2]  # two of the last three


async def test_an_alert_links_its_report_whose_window_stays_pictured_as_later_ones_close() -> None:
    """The alerted window's tests and feature counts outlive it as the latest window (its
    report shows them), through a checkpoint; the alert carries the report's address."""
    rng = np.random.default_rng(3)
    profile = build_profile("iris", 1, rng.normal(size=(2000, 2)))

    async def reference(model: str, version: int) -> ReferenceProfile | None:
        return profile

    detector = Detector(
        reference,
        lambda _: ModelMonitor(window=WindowPolicy(size=100)),
        report_link=lambda alert: (
            f"https://drift/reports/{alert.model}?w={alert.window.index}" if alert.window else ""
        ),
    )
    detector.state("iris", 1)
    await asyncio.sleep(0.01)
    rows = np.vstack([rng.normal(1.5, 1.0, size=(100, 2)), rng.normal(size=(300, 2))])
    outgoing = observe(detector, [logged_row(f"r{i}", 1000.0 + i, r) for i, r in enumerate(rows)])
    [alert] = [m for m, _ in outgoing if isinstance(m, events.DriftAlert)]
    assert alert.report_url == "https://drift/reports/iris?w=0"

    status = snapshots.decode("iris", 1, snapshots.encode(detector.snapshot("iris", 1))).status
    assert status.latest_window is not None
    assert status.latest_window.index == 3
    assert [m.window.index for m in status.recent_metrics] == [0, 1, 2, 3]
    pictured = status.alerted_window
    assert pictured is not None
    assert pictured.window.index == 0
    assert any(f.drifted and f.feature == "f0" for f in pictured.findings)
    assert [sum(h.counts) for h in pictured.histograms] == [100, 100]
    assert [h.counts for h in pictured.histograms] != [h.counts for h in status.histograms]
