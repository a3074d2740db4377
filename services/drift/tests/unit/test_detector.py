"""The detector: idle time windows close on their own; labels that came first still alert."""

from __future__ import annotations

import numpy as np
from google.protobuf.message import Message

from flywheel.common.v1.types_pb2 import Tensor
from flywheel.drift.v1 import events_pb2 as events
from flywheel.drift.v1 import types_pb2 as types
from flywheel.drift.v1.ground_truth_pb2 import GroundTruth
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.prediction_logs import ground_truth_label
from flywheel_common.timestamps import epoch
from flywheel_drift import converters
from flywheel_drift.domain import DriftEvent, ModelMonitor
from flywheel_drift.handlers import Detector
from flywheel_drift.profiles import ReferenceProfile
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
