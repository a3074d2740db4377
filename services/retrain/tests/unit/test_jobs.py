"""Training jobs: the environment contract, the local executor on real subprocesses, and
Kubernetes Job manifests that the API server would accept."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from flywheel_common.training import TrainingResult, TrainingRun
from flywheel_retrain.executors import JobSpec, LocalExecutor
from flywheel_retrain.kubernetes import manifest_yaml, render_job, validate_job
from flywheel_retrain.settings import KubernetesSettings

RUN = TrainingRun(
    model="breast-cancer",
    run_id="0123456789abcdef0123456789abcdef",
    dataset_path="/data/d.csv",
    dataset_uri="file:///data/d.csv",
    dataset_sha256="ab" * 32,
    output_dir="/data/out",
    registry_address="registry:50051",
    parent_version=3,
    triggered_by="drift-alert:42",
)


def test_the_run_travels_through_the_environment() -> None:
    assert TrainingRun.from_environment(RUN.environment()) == RUN
    assert TrainingRun.from_environment({}) is None
    assert RUN.idempotency_key == f"retrain:{RUN.run_id}"


def test_the_job_is_handed_the_runs_trace() -> None:
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    traced = replace(RUN, traceparent=parent)
    environment = traced.environment()
    assert environment["TRACEPARENT"] == parent  # OpenTelemetry's environment carrier
    assert TrainingRun.from_environment(environment) == traced
    assert "TRACEPARENT" not in RUN.environment()


def test_a_training_result_is_read_back_or_explained(tmp_path: Path) -> None:
    TrainingResult("m", 7).write(tmp_path)
    assert TrainingResult.read(tmp_path) == TrainingResult("m", 7)
    with pytest.raises(ValueError, match=r"result\.json"):
        TrainingResult.read(tmp_path / "empty")


def _job(tmp_path: Path, command: str, timeout: float = 30.0) -> JobSpec:
    return JobSpec(RUN, 1, command, timeout, tmp_path / "training.log", env={"EXTRA": "yes"})


async def test_the_local_executor_runs_captures_and_times_out(tmp_path: Path) -> None:
    executor = LocalExecutor()
    handles: list[str] = []

    async def started(handle: str) -> None:
        handles.append(handle)

    script = (
        "python -c \"import os, sys; print(os.environ['FLYWHEEL_TRAINING_RUN_ID'], "
        "os.environ['EXTRA'], sys.executable)\""
    )
    outcome = await executor.run(_job(tmp_path, script), started)
    assert outcome.succeeded
    assert handles[0].isdigit()
    log = (tmp_path / "training.log").read_text()
    assert RUN.run_id in log
    assert "yes" in log
    assert sys.executable in log  # a leading `python` is the trigger's own interpreter

    failed = await executor.run(_job(tmp_path, 'python -c "raise SystemExit(4)"'), started)
    assert not failed.succeeded
    assert "code 4" in failed.error
    slow = await executor.run(
        _job(tmp_path, 'python -c "import time; time.sleep(30)"', 0.5), started
    )
    assert slow.timed_out
    missing = await executor.run(_job(tmp_path, "no-such-program --flag"), started)
    assert "cannot start" in missing.error


def test_a_rendered_job_is_valid_and_carries_the_run(tmp_path: Path) -> None:
    settings = KubernetesSettings(volume_claim="flywheel-data", service_account="trainer")
    job = JobSpec(RUN, 2, "python -m flywheel_examples.breast_cancer", 600, tmp_path / "log")
    manifest = render_job(job, settings)
    assert validate_job(manifest) == []
    parsed = yaml.safe_load(manifest_yaml(manifest))
    assert parsed == manifest
    spec = parsed["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 600
    [container] = spec["template"]["spec"]["containers"]
    assert container["command"] == ["python", "-m", "flywheel_examples.breast_cancer"]
    environment = {e["name"]: e["value"] for e in container["env"]}
    assert environment["FLYWHEEL_TRAINING_RUN_ID"] == RUN.run_id
    assert environment["FLYWHEEL_TRAINING_PARENT_VERSION"] == "3"
    assert container["volumeMounts"][0]["name"] == spec["template"]["spec"]["volumes"][0]["name"]
    assert len(parsed["metadata"]["name"]) <= 63


def test_validation_names_what_the_api_server_would_refuse(tmp_path: Path) -> None:
    job = JobSpec(RUN, 1, "train", 60, tmp_path / "log")
    manifest = render_job(job, KubernetesSettings(image=""))
    manifest["metadata"]["name"] = "Retrain_Run"
    container = manifest["spec"]["template"]["spec"]["containers"][0]
    container["volumeMounts"] = [{"name": "missing", "mountPath": "/x"}]
    container["env"].append({"name": "1BAD", "value": "x"})
    manifest["spec"]["template"]["spec"]["restartPolicy"] = "Always"
    problems = "\n".join(validate_job(manifest))
    for expected in ("metadata.name", "no image", "names no volume", "1BAD", "restartPolicy"):
        assert expected in problems


def test_the_job_registers_with_the_lineage_that_names_its_run() -> None:
    lineage = RUN.lineage("abc123", "python -m job")
    assert (lineage.retrain_run_id, lineage.parent_version) == (RUN.run_id, 3)
    assert (lineage.dataset_uri, lineage.dataset_sha256) == (RUN.dataset_uri, RUN.dataset_sha256)
    assert (lineage.triggered_by, lineage.code_version) == ("drift-alert:42", "abc123")
    assert lineage.training_entrypoint == "python -m job"
    named = replace(RUN, training_entrypoint="python train.py --fast")
    assert named.lineage("abc123", "python -m job").training_entrypoint == "python train.py --fast"
