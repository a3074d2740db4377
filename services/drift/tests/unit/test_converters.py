"""Converters: statuses, alerts and metric windows survive a trip through their messages, and
prediction logs become one batch per model version."""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from flywheel.common.v1.types_pb2 import Tensor
from flywheel.drift.v1 import types_pb2 as types
from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel_common.timestamps import epoch
from flywheel_drift import converters
from flywheel_drift.detection import DriftTest, Finding, Kind, Severity
from flywheel_drift.domain import (
    Alert,
    ConceptStatus,
    DriftStatus,
    LatencyQuantiles,
    MetricsWindow,
    WindowPicture,
    WindowRef,
)
from flywheel_drift.performance import Estimate
from flywheel_drift.profiles import FeatureCounts
from flywheel_drift.statistics import Correction

# Times in whole or half seconds: a float carries an epoch time to about 0.2 microseconds, so
# only such times come back from a Timestamp bit for bit.
REF = WindowRef("iris:1:7", timed=True, index=7, start=1_700_000_000.0, end=1_700_000_060.0)
DRIFTED = Finding(
    "petal_width", 3, Kind.DATA, DriftTest.KOLMOGOROV_SMIRNOV, 0.41, 0.01, True,
    Severity.HIGH, p_value=1e-9, adjusted_p_value=4e-9,
)  # fmt: skip
STEADY = Finding("", -1, Kind.QUALITY, DriftTest.NAN_RATE, 0.0, 0.05, False, Severity.NONE)
METRICS = MetricsWindow(
    model="iris",
    version=1,
    window=REF,
    request_count=1000,
    error_count=3,
    latency=LatencyQuantiles(1.5, 4.25, 9.0, 2.0, 12.5),
    predictions={"0": 400, "1": 350, "2": 250},
    nan_flagged_count=2,
    labeled_count=120,
    accuracy=0.875,
    emitted_at=1_700_000_061.5,
)


def test_a_metrics_window_round_trips() -> None:
    assert converters.metrics_of(converters.metrics_message(METRICS)) == METRICS
    unlabeled = replace(METRICS, labeled_count=0, accuracy=None)
    assert converters.metrics_of(converters.metrics_message(unlabeled)) == unlabeled
    estimated = replace(unlabeled, estimate=Estimate(0.8125, 990, 1000))
    assert converters.metrics_of(converters.metrics_message(estimated)) == estimated
    regression = replace(METRICS, accuracy=None, mean_absolute_error=1.5,
                         root_mean_squared_error=2.25)  # fmt: skip
    assert converters.metrics_of(converters.metrics_message(regression)) == regression


def test_a_metrics_window_message_carries_the_class_histogram_sorted() -> None:
    message = converters.metrics_message(METRICS)
    [histogram] = message.output_histograms
    assert histogram.output == "label"
    assert list(histogram.histogram.categories) == ["0", "1", "2"]
    assert list(histogram.histogram.counts) == [400, 350, 250]
    assert message.window.kind == types.WINDOW_KIND_TIME
    assert message.window.start == epoch(REF.start)


def test_window_and_concept_alerts_round_trip() -> None:
    window = Alert(
        alert_id="iris:1:7:drift",
        model="iris",
        version=1,
        kinds=frozenset({Kind.QUALITY, Kind.DATA}),
        severity=Severity.HIGH,
        summary="petal_width kolmogorov_smirnov 0.41 (p=4e-09)",
        occurred_at=1_700_000_061.5,
        window=REF,
        findings=(DRIFTED,),
        features_tested=4,
        features_drifted=1,
        correction=Correction.BONFERRONI,
        alpha=0.01,
        report_url="https://drift.example.com/reports/iris?version=1&window=7",
    )
    concept = Alert(
        alert_id="iris:1:concept:300",
        model="iris",
        version=1,
        kinds=frozenset({Kind.CONCEPT}),
        severity=Severity.HIGH,
        summary="error rate changed",
        occurred_at=1_700_000_100.0,
        change_began_at=1_700_000_040.5,
    )
    for alert in (window, concept):
        assert converters.alert_of(converters.alert_message(alert)) == alert
    message = converters.alert_message(window)
    assert list(message.kinds) == [types.ALERT_KIND_DATA, types.ALERT_KIND_QUALITY]
    assert message.correction == types.MULTIPLE_TESTING_CORRECTION_BONFERRONI
    concept_message = converters.alert_message(concept)
    assert not concept_message.HasField("window")
    assert concept_message.correction == types.MULTIPLE_TESTING_CORRECTION_UNSPECIFIED


def test_findings_keep_which_p_values_they_have() -> None:
    for finding in (DRIFTED, STEADY):
        assert converters.finding_of(converters.finding_message(finding)) == finding
    message = converters.finding_message(STEADY)
    assert not message.HasField("p_value")
    assert message.severity == types.SEVERITY_UNSPECIFIED


def test_a_status_round_trips_at_every_stage() -> None:
    fresh = DriftStatus("iris", 1)
    closed = DriftStatus(
        "iris",
        1,
        reference_loaded=True,
        latest_window=REF,
        findings=(DRIFTED, STEADY),
        latest_metrics=METRICS,
        concept=ConceptStatus(300, 0.25, True, 1_700_000_100.0),
        last_alert_id="iris:1:7:drift",
        windows_closed=8,
    )
    labeled = DriftStatus("iris", 1, concept=ConceptStatus(5, 0.2))
    counts = (FeatureCounts("petal_width", (3, 0, 97)),)
    reported = replace(
        closed,
        histograms=counts,
        recent_metrics=(METRICS, METRICS),
        alerted_window=WindowPicture(REF, (DRIFTED,), counts),
    )
    for status in (fresh, closed, labeled, reported):
        assert converters.status_of(converters.status_message(status)) == status
    message = converters.status_message(fresh)
    for field in ("latest_window", "latest_metrics", "concept_drift", "last_alerted_window"):
        assert not message.HasField(field)
    assert converters.status_message(labeled).HasField("concept_drift")


def test_filters_name_kinds_and_least_severities() -> None:
    assert converters.kind_of(types.ALERT_KIND_CONCEPT) is Kind.CONCEPT
    assert converters.kind_of(types.ALERT_KIND_UNSPECIFIED) is None
    assert converters.least_severity_of(types.SEVERITY_UNSPECIFIED) is Severity.NONE
    assert converters.least_severity_of(types.SEVERITY_MEDIUM) is Severity.MEDIUM
    assert converters.least_severity_of(9) is None


def logged(model: str, version: int, request: str, shadow: bool = False) -> PredictionLog:
    return PredictionLog(
        request_id=request,
        model=model,
        version=version,
        shadow=shadow,
        inputs=[
            Tensor(name="x", datatype="FP32", shape=[1, 2], data=np.ones(2, np.float32).tobytes())
        ],
        outputs=[Tensor(name="label", datatype="INT64", shape=[1], data=np.int64(2).tobytes())],
        received_at=epoch(100.5),
    )


def test_prediction_logs_become_one_batch_per_version_and_shadowing() -> None:
    logs = [
        logged("iris", 1, "a"),
        logged("iris", 2, "b"),
        logged("iris", 1, "c"),
        logged("iris", 2, "d", shadow=True),
    ]
    batches = converters.batches(logs)
    keys = [(b.model, b.version, b.shadow) for b in batches]
    assert keys == [("iris", 1, False), ("iris", 2, False), ("iris", 2, True)]
    first = batches[0].observations
    assert list(first.request_ids) == ["a", "c"]
    assert list(first.predictions) == ["2", "2"]
    assert first.features.shape == (2, 2)
    assert first.received_at.tolist() == [100.5, 100.5]
