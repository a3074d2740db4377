"""The Prometheus alert rules on shed and damaged prediction logs name the series the
gateway exports, with the labels they group by."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from prometheus_client import CollectorRegistry, generate_latest

from flywheel_gateway.predictions import LoggerMetrics, PredictionLogger
from flywheel_gateway.spool import SpoolWriter

ALERTS = Path(__file__).resolve().parents[4] / "infra" / "prometheus" / "alerts.yml"


def test_each_gateway_alert_reads_a_series_the_gateway_exports(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    meter = MeterProvider(metric_readers=[PrometheusMetricReader(registry=registry)]).get_meter(
        "flywheel"
    )
    PredictionLogger(SpoolWriter(tmp_path, 1 << 20), meters=LoggerMetrics.of(meter))
    exported = generate_latest(registry).decode()

    rules = yaml.safe_load(ALERTS.read_text())
    [gateway] = [group for group in rules["groups"] if group["name"] == "flywheel-gateway"]
    assert {rule["alert"] for rule in gateway["rules"]} == {
        "FlywheelPredictionLogsShed",
        "FlywheelPredictionJournalDamaged",
    }
    for rule in gateway["rules"]:
        for series in re.findall(r"flywheel_[a-z_]+", rule["expr"]):
            assert re.search(rf'^{series}\{{.*reason="', exported, re.MULTILINE), series
    # Every reason from the start, at 0: increase() then sees the first log shed.
    assert re.search(
        r'^flywheel_predictions_dropped_total\{[^}]*reason="journal_full"[^}]*\} 0\.0$',
        exported,
        re.MULTILINE,
    ), exported
