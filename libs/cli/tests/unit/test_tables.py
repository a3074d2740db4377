"""The command line's tables at 80 columns: the values people look for are never broken."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from flywheel_cli import app
from rich.console import Console
from rich.table import Table

from flywheel.deployer.v1 import types_pb2 as deployer_types
from flywheel.registry.v1 import types_pb2 as registry_types
from flywheel.retrain.v1 import types_pb2 as retrain_types
from flywheel_common.timestamps import timestamp

MODEL = "breast-cancer-b3c7dd"
OTHER = "fraud-detection-eu-west-1"
CREATED = timestamp(datetime(2026, 12, 5, 9, 17, 20, tzinfo=UTC))


def render(*tables: Table) -> list[str]:
    console = Console(width=80, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    for table in tables:
        console.print(table)
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    return lines


def on_one_line(lines: list[str], *values: str) -> None:
    for value in values:
        assert any(value in line for line in lines), f"{value!r} is broken or missing:\n" + (
            "\n".join(lines)
        )


def test_status() -> None:
    report = {
        "services": {
            name: {"address": f"127.0.0.1:{port}", "serving": name != "drift"}
            for name, port in zip(app.SERVICES, (50051, 50052, 8001, 50054, 50055), strict=True)
        },
        "models": [
            {
                "model": MODEL,
                "aliases": {"production": 3, "candidate": 3, "champion-2025": 2},
                "traffic": {"2": 80, "3": 20},
                "gateways": [
                    {"id": "flywheel-gateway-7d9c8b6f5-x2x4z-1", "live": True, "ready": [2, 3]},
                    {"id": "flywheel-gateway-7d9c8b6f5-q8r7k-1", "live": True, "ready": [2]},
                    {"id": "vm-12737", "live": False, "ready": [1]},
                ],
                "rollout": "progressing",
            },
            {
                "model": OTHER,
                "aliases": {"production": 12},
                "traffic": {"12": 100},
                "gateways": [],
                "rollout": "",
            },
        ],
    }
    lines = render(*app._status_tables(report))
    on_one_line(lines, "127.0.0.1:50055", "SERVING", "DOWN", MODEL, OTHER, "progressing")
    on_one_line(lines, "production=v3", "champion-2025=v2", "v2:80%", "v3:20%", "v12:100%")
    on_one_line(lines, "(+1 gone)")
    assert not any("vm-12737" in line for line in lines)  # gone gateways are only counted


def test_models() -> None:
    models = [
        registry_types.Model(
            name=name,
            latest_version=latest,
            version_count=latest,
            aliases=[
                registry_types.Alias(name="production", version=latest),
                registry_types.Alias(name="candidate", version=latest),
            ],
            description="Scaled logistic regression on scikit-learn's breast-cancer data "
            "(30 features), retrained on drift",
        )
        for name, latest in ((MODEL, 2), (OTHER, 117))
    ]
    lines = render(app._models_table(models))
    on_one_line(lines, MODEL, OTHER, "v117", "production=v117", "candidate=v2")


def test_versions() -> None:
    versions = [
        registry_types.ModelVersion(
            model=MODEL,
            version=version,
            status=status,
            aliases=aliases,
            metrics={"accuracy": accuracy, "f1": 0.9712, "roc_auc": 0.99412},
            lineage=registry_types.Lineage(triggered_by=trigger),
            created_at=CREATED,
        )
        for version, status, aliases, accuracy, trigger in (
            (
                12,
                registry_types.MODEL_VERSION_STATUS_READY,
                ["production", "candidate"],
                0.964,
                f"drift-alert:{MODEL}:11:5:drift",
            ),
            (
                11,
                registry_types.MODEL_VERSION_STATUS_ARCHIVED,
                [],
                0.982,
                "retrain:4f0c1d2e9a8b47c6b5a4e3d2c1b0a9f8",
            ),
            (10, registry_types.MODEL_VERSION_STATUS_READY, [], 0.951, "manual:examples"),
        )
    ]
    lines = render(app._versions_table(versions))
    on_one_line(lines, "v12", "ready", "archived", "production", "candidate", "accuracy=0.964")
    on_one_line(lines, "roc_auc=0.994", "drift-alert:11:5:drift", "manual:examples")
    on_one_line(lines, "retrain:4f0c1d2e")


def test_ages_read_like_kubectl() -> None:
    now = CREATED.seconds
    assert [app._age(CREATED, now + s) for s in (42, 720, 3 * 3600 + 5, 9 * 86400)] == [
        "42s",
        "12m",
        "3h",
        "9d",
    ]


def test_rollouts() -> None:
    rollouts = [
        deployer_types.Rollout(
            rollout_id=rollout_id,
            model=MODEL,
            version=version,
            baseline_version=version - 1,
            strategy=strategy,
            phase=phase,
            weight_percent=weight,
            end_reason=reason,
        )
        for rollout_id, version, strategy, phase, weight, reason in (
            (
                "abfb0a9d5c1e4f0f9d3b2a1c0e9f8d7c",
                3,
                deployer_types.STRATEGY_CANARY,
                deployer_types.ROLLOUT_PHASE_ROLLED_BACK,
                0,
                "error_rate 0.031 > 0.01 over 212 requests at the 20% step; traffic back to v2",
            ),
            (
                "92c17f3b0a9d4c8e8f7a6b5c4d3e2f1a",
                2,
                deployer_types.STRATEGY_CANARY,
                deployer_types.ROLLOUT_PHASE_SUCCEEDED,
                100,
                "100 requests, all checks passed (error_rate 0 <= 0.01)",
            ),
            (
                "0c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f",
                1,
                deployer_types.STRATEGY_DIRECT,
                deployer_types.ROLLOUT_PHASE_SUCCEEDED,
                100,
                "every live gateway holds the version",
            ),
        )
    ]
    lines = render(app._rollouts_table(rollouts))
    on_one_line(lines, "abfb0a9d", "v2→v3", "v1→v2", "canary", "direct", "rolled_back")
    on_one_line(lines, "succeeded", "100%", "error_rate 0.031")
    assert not any("abfb0a9d5" in line for line in lines)  # ids shortened to their prefix


def test_retrain_runs_one_table_per_model() -> None:
    def run(
        run_id: str, model: str, state: int, kind: int, candidate: int, error: str = ""
    ) -> retrain_types.Run:
        result = retrain_types.Run(
            run_id=run_id,
            model=model,
            state=state,
            trigger=retrain_types.Trigger(kind=kind),
            base_version=1,
            candidate_version=candidate,
            error=error,
        )
        if candidate:
            result.gate.CopyFrom(
                retrain_types.GateResult(
                    decision=retrain_types.GATE_DECISION_PASSED,
                    metric="accuracy",
                    candidate_value=0.98,
                    production_value=0.3914,
                    summary="accuracy: candidate 0.98 vs production 0.39, improvement 0.59 "
                    ">= required 0.05",
                )
            )
        return result

    runs = [
        run(
            "a2f5428b9c0d4e1f8a7b6c5d4e3f2a1b",
            MODEL,
            retrain_types.RUN_STATE_AWAITING_APPROVAL,
            retrain_types.TRIGGER_KIND_DRIFT_ALERT,
            2,
        ),
        run(
            "77e1c0d9b8a74f6e5d4c3b2a1f0e9d8c",
            OTHER,
            retrain_types.RUN_STATE_FAILED,
            retrain_types.TRIGGER_KIND_METRIC_DECAY,
            0,
            "training failed: exit status 1 after 3 attempts; see the run's log",
        ),
        run(
            "5d4c3b2a1f0e9d8c77e1c0d9b8a74f6e",
            MODEL,
            retrain_types.RUN_STATE_PROMOTED,
            retrain_types.TRIGGER_KIND_SCHEDULE,
            2,
        ),
    ]
    tables = app._runs_tables(runs)
    assert [t.title for t in tables] == [MODEL, OTHER]
    lines = render(*tables)
    on_one_line(lines, MODEL, OTHER, "a2f5428b", "77e1c0d9", "awaiting_approval", "promoted")
    on_one_line(lines, "failed", "drift_alert", "metric_decay", "schedule", "v1→v2", "v1→-")
    on_one_line(lines, "accuracy 0.98", "training failed")


@pytest.mark.parametrize("width", [80, 120])
def test_an_alert_is_one_line_at_any_width(width: int, capsys: pytest.CaptureFixture[str]) -> None:
    app.console = Console(width=width, file=None)
    app.print_line(
        f"2026-12-05 09:17:09  {MODEL} v1  high  "
        + "; ".join(f"feature_{i} kolmogorov_smirnov 0.36 (p=7.6e-11)" for i in range(30))
    )
    [line] = capsys.readouterr().out.splitlines()
    assert line.startswith(f"2026-12-05 09:17:09  {MODEL} v1  high")
    assert len(line) == width
