"""What the benchmarks share: Flywheel services as processes (over TLS with the tests'
certificates), registration, quantiles, virtualenvs for the references."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
from pathlib import Path

from flywheel.registry.v1 import registry_pb2_grpc as registry_grpc
from flywheel_common.healthcheck import wait_until_serving
from flywheel_common.registration import registration
from flywheel_common.settings import ClientTlsSettings
from flywheel_testing.backends import unused_port
from flywheel_testing.tls import pki, secure_channel, tls_environment


async def start(
    command: list[str], env: dict[str, str], port: int, tls: ClientTlsSettings | None = None
) -> asyncio.subprocess.Process:
    """Start a server process and wait until its gRPC health check answers SERVING (over
    TLS trusting the tests' CA unless `tls` says otherwise)."""
    process = await asyncio.create_subprocess_exec(
        *command,
        env=os.environ | env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    tls = tls or pki().client_tls()
    if await wait_until_serving([f"127.0.0.1:{port}"], tls, timeout=90):
        process.kill()
        raise RuntimeError(f"{command} did not start")
    return process


async def start_service(
    name: str, settings: dict[str, str], bootstrap: str
) -> tuple[asyncio.subprocess.Process, str]:
    """`python -m flywheel_<name>` on a free port, quiet, without a metrics endpoint."""
    port = unused_port()
    prefix = f"FLYWHEEL_{name.upper()}_"
    env = {
        f"{prefix}GRPC__PORT": str(port),
        f"{prefix}TELEMETRY__METRICS_PORT": "-1",
        f"{prefix}REPORT__PORT": "0",  # the drift's reports; other services have none
        f"{prefix}HTTP__PORT": "0",  # the gateway's REST API
        f"{prefix}TELEMETRY__LOG_LEVEL": "WARNING",
        f"{prefix}KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        f"{prefix}AUTH__ALLOW_ANONYMOUS": "true",
        **tls_environment(prefix),
    } | {f"{prefix}{key}": value for key, value in settings.items()}
    process = await start([sys.executable, "-m", f"flywheel_{name}"], env, port)
    return process, f"127.0.0.1:{port}"


async def stop(process: asyncio.subprocess.Process) -> None:
    process.send_signal(signal.SIGTERM)
    await asyncio.wait_for(process.wait(), 60)


async def register(address: str, model: str, artifact: bytes) -> int:
    """Register an ONNX artifact as the model's next version; returns the version."""
    async with secure_channel(address) as channel:
        stub = registry_grpc.RegistryServiceStub(channel)
        messages = registration(model, artifact, chunk=1 << 20, breaking_change=True)
        response = await stub.RegisterModelVersion(iter(messages))
    return int(response.model_version.version)


def quantile(values: list[float], q: float) -> float:
    """The q-quantile (0.5, 0.99, ...) of at least two values."""
    return statistics.quantiles(values, n=100)[int(q * 100) - 1]


def reference_venv(folder: Path, requirements: Path) -> Path:
    """A virtualenv of its own at `folder` for what a benchmark compares Flywheel against (their
    pins are not Flywheel's), built with uv from `requirements` on first use and brought up to
    date when they change; returns its bin folder."""
    python = folder / "bin" / "python"
    installed = folder / "requirements.txt"
    wanted = requirements.read_text()
    if python.exists() and installed.exists() and installed.read_text() == wanted:
        return folder / "bin"
    found = shutil.which("uv")
    uv = [found] if found else [sys.executable, "-m", "uv"]
    if not python.exists():
        subprocess.run([*uv, "venv", "-q", "--python", "3.11", str(folder)], check=True)
    subprocess.run(
        [*uv, "pip", "install", "-q", "--python", str(python), "-r", str(requirements)], check=True
    )
    installed.write_text(wanted)
    return folder / "bin"


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process and its live descendants (a server's
    workers), from /proc/PID/stat."""
    parents: dict[int, int] = {}
    seconds: dict[int, float] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) "
        process = int(stat.parent.name)
        parents[process] = int(fields[1])
        seconds[process] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    tree = {pid}
    grown = True
    while grown:
        children = {child for child, parent in parents.items() if parent in tree}
        grown = not children <= tree
        tree |= children
    return sum(seconds.get(process, 0.0) for process in tree)
