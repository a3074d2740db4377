"""Several serving processes behind one port, so a gateway uses every core it is given.

With `WORKERS` above one, `python -m flywheel_gateway` becomes a small supervisor: it starts
one serving process per worker (each with `WORKERS=1`, its `WORKER_INDEX` and
`GRPC__REUSE_PORT=true`, so the kernel shares the port's connections out among them, the
REST API's as well) and
forwards SIGTERM and SIGINT to them. Each worker is a full replica: its own routing, models,
prediction-log spool and shipper, its own status on `flywheel.gateway-status`. If a worker
dies, the supervisor stops the others and exits with its status, so the pod restarts whole.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from types import FrameType

from flywheel_common.logging import configure_logging
from flywheel_gateway.settings import GatewaySettings

log = logging.getLogger(__name__)


def worker_environment(settings: GatewaySettings, index: int) -> dict[str, str]:
    """The variables that make worker `index` of `settings`' gateway."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    env = {
        f"{prefix}WORKERS": "1",
        f"{prefix}WORKER_INDEX": str(index),
        f"{prefix}GRPC__REUSE_PORT": "true",
    }
    if settings.telemetry.metrics_port > 0:  # one scrape port per worker, from the given one
        env[f"{prefix}TELEMETRY__METRICS_PORT"] = str(settings.telemetry.metrics_port + index)
    for name, value in (("GATEWAY_ID", settings.gateway_id), ("INSTANCE_ID", settings.instance_id)):
        if value:  # the default ids already differ per process; a given one gets a suffix
            env[f"{prefix}{name}"] = f"{value}-w{index}"
    return env


def run_workers(settings: GatewaySettings) -> int:
    """Run `settings.workers` serving processes until signalled or until one dies; returns
    the exit status for the supervisor's own process."""
    configure_logging(
        settings.service_name, settings.telemetry.log_level, settings.telemetry.log_json
    )
    if not settings.grpc.port or not settings.http.port:
        log.error(
            "WORKERS above 1 needs a fixed GRPC__PORT and HTTP__PORT (or HTTP__PORT=-1) for "
            "the workers to share"
        )
        return 2
    workers = {
        process.pid: process
        for process in (
            subprocess.Popen(
                [sys.executable, "-m", "flywheel_gateway"],
                env=os.environ | worker_environment(settings, index),
            )
            for index in range(settings.workers)
        )
    }
    log.info("workers started", extra={"workers": sorted(workers), "port": settings.grpc.port})
    stopping = False

    def stop_all(signum: int, _: FrameType | None = None) -> None:
        nonlocal stopping
        stopping = True
        for process in workers.values():
            if process.returncode is None:
                process.send_signal(signum)

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    status = 0
    while any(process.returncode is None for process in workers.values()):
        pid, wait_status = os.wait()
        process = workers.get(pid)
        if process is None:
            continue
        process.returncode = os.waitstatus_to_exitcode(wait_status)
        if not stopping:
            log.error(
                "a worker ended; stopping the others",
                extra={"worker": pid, "status": process.returncode},
            )
            status = _exit_status(process.returncode)
            stop_all(signal.SIGTERM)
        elif process.returncode and not status:
            status = _exit_status(process.returncode)
    log.info("workers stopped", extra={"status": status})
    return status


def _exit_status(returncode: int) -> int:
    """A worker's exit status as the supervisor's own: killed by a signal counts as 1."""
    return returncode if returncode > 0 else 1
