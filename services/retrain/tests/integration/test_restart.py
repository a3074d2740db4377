"""A retrain trigger killed with SIGKILL mid-run starts no duplicate run and no duplicate
version: the restarted process resumes the run it finds in its database; with two replicas,
the standby finishes it, even without the files the killed one had prepared."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from flywheel.retrain.v1 import types_pb2 as pb
from flywheel_common.settings import DatabaseSettings, TelemetrySettings
from flywheel_retrain.settings import RetrainSettings
from flywheel_testing.backends import reset_postgres, unused_port
from flywheel_testing.clients import replicas_target
from flywheel_testing.leases import lease_holder
from flywheel_testing.processes import ServiceReplica, service_process
from flywheel_testing.tls import grpc_settings
from flywheel_testing.waiting import eventually

from .conftest import Loop, breast_cancer, running_loop


def slow_first_attempt(marker: Path) -> str:
    """The example pipeline, its first attempt three seconds slower: long enough to be
    killed during training. The attempt that finishes the run starts at once (`marker`
    records that the first one began)."""
    return (
        'python -c "import os, runpy, sys, time; '
        f"first = not os.path.exists('{marker}'); open('{marker}', 'a').close(); "
        "time.sleep(3 if first else 0); sys.argv = [sys.argv[0]]; "
        "runpy.run_module('flywheel_examples.breast_cancer', run_name='__main__')\""
    )


async def test_a_trigger_killed_mid_run_resumes_it_without_a_duplicate(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    port = unused_port()
    async with running_loop(kafka_bootstrap, tmp_path, start_retrain=False) as loop:
        loop.retrain_address = f"127.0.0.1:{port}"
        settings = loop.platform.settings(
            RetrainSettings,
            "retrain",
            grpc=grpc_settings(port=port),
            telemetry=TelemetrySettings(metrics_port=-1, log_level="ERROR"),
        )
        first = await service_process("flywheel_retrain", settings)
        second = None
        try:
            await loop.set_policy(
                gate=pb.EvaluationGate(metric="accuracy", holdout_size=100),
                executor=pb.ExecutorConfig(
                    entrypoint_override=slow_first_attempt(tmp_path / "first-attempt")
                ),
            )
            await loop.log_traffic(*breast_cancer(shift_sigmas=1.0))
            alert_id = await loop.alert()
            orphan = await job_started(loop)
            first.send_signal(signal.SIGKILL)
            await first.wait()

            second = await service_process("flywheel_retrain", settings)
            await loop.alert(alert_id)  # the alert again, as a redelivery would bring it
            run = await loop.wait_run(
                {pb.RUN_STATE_PROMOTED, pb.RUN_STATE_FAILED, pb.RUN_STATE_REJECTED}
            )
            assert run.state == pb.RUN_STATE_PROMOTED, run.error
            assert run.attempt == 2  # the killed attempt, then the resumed one
            assert len(await loop.runs()) == 1
            # The orphaned first attempt and the resumed one registered under the run's
            # idempotency key: one candidate version, not two.
            await eventually(lambda: asyncio.to_thread(exited, orphan), timeout=60)
            assert await loop.versions() == [1, 2]
            assert await loop.production() == 2
        finally:
            for process in (first, second):
                if process is not None and process.returncode is None:
                    process.terminate()
                    await process.wait()


async def job_started(loop: Loop) -> int:
    """The process id of the run's training job, once it runs."""
    started: list[int] = []

    async def running() -> bool:
        started[:] = [
            int(run.executor_job_id)
            for run in await loop.runs()
            if run.state == pb.RUN_STATE_TRAINING and run.executor_job_id
        ]
        return bool(started)

    await eventually(running, timeout=120, poll=0.2)
    return started[0]


def exited(pid: int) -> bool:
    """Whether the process has finished (gone, or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def replica(loop: Loop, url: str, name: str) -> ServiceReplica:
    """A retrain replica on the shared database, with a data folder (a pod's) of its own."""
    settings = loop.platform.settings(
        RetrainSettings,
        "retrain",
        grpc=grpc_settings(port=unused_port()),
        telemetry=TelemetrySettings(metrics_port=-1, log_level="ERROR"),
        database=DatabaseSettings(url=url),
        data_dir=loop.data_dir / name,
        instance_id=name,
    )
    return ServiceReplica("flywheel_retrain", settings)


async def test_a_standby_finishes_a_run_whose_files_died_with_the_leader(
    kafka_bootstrap: str, postgres_url: str, tmp_path: Path
) -> None:
    await reset_postgres(postgres_url)
    async with running_loop(kafka_bootstrap, tmp_path, start_retrain=False) as loop:
        replicas = [replica(loop, postgres_url, name) for name in ("retrain-a", "retrain-b")]
        loop.retrain_address = replicas_target([r.address for r in replicas])
        try:
            await asyncio.gather(*(each.start() for each in replicas))
            await loop.set_policy(
                gate=pb.EvaluationGate(metric="accuracy", holdout_size=100),
                executor=pb.ExecutorConfig(
                    entrypoint_override=slow_first_attempt(tmp_path / "first-attempt")
                ),
            )
            await loop.log_traffic(*breast_cancer(shift_sigmas=1.0))
            await loop.alert()
            await loop.wait_run({pb.RUN_STATE_TRAINING})
            holder = await lease_holder(postgres_url)
            assert holder is not None
            leader = next(r for r in replicas if r.settings.instance_id == holder[0])
            await leader.kill()
            # Its pod is gone with it: the standby cannot read the dataset it prepared.
            leader.settings.data_dir.rename(tmp_path / "gone")
            run = await loop.wait_run(
                {pb.RUN_STATE_PROMOTED, pb.RUN_STATE_FAILED, pb.RUN_STATE_REJECTED}
            )
            assert run.state == pb.RUN_STATE_PROMOTED, run.error
            assert len(await loop.runs()) == 1
            assert await loop.production() == 2
        finally:
            for each in replicas:
                await each.stop()
