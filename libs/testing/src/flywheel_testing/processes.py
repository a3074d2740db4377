"""A Flywheel service as its own operating-system process, for tests that kill it.

The process reads the same settings object an in-process test would build, passed the way
operators pass them: as environment variables.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from pydantic import BaseModel, SecretStr
from pydantic_core import to_jsonable_python

from flywheel_common.healthcheck import wait_until_serving
from flywheel_common.settings import ServiceSettings
from flywheel_testing.tls import client_tls_for


def environment(settings: ServiceSettings) -> dict[str, str]:
    """The variables that make a service process read `settings` (the fields set on it)."""
    prefix = str(settings.model_config.get("env_prefix", ""))
    return dict(_variables(prefix, settings))


def _variables(prefix: str, section: BaseModel) -> Iterator[tuple[str, str]]:
    for name in sorted(section.model_fields_set):
        value = getattr(section, name)
        key = f"{prefix}{name.upper()}"
        if isinstance(value, BaseModel):
            yield from _variables(f"{key}__", value)
        elif value is None:
            continue  # unset: the field's default (a variable would be read as a string)
        elif isinstance(value, SecretStr):
            yield key, value.get_secret_value()
        else:
            plain = to_jsonable_python(value)
            yield key, plain if isinstance(plain, str) else json.dumps(plain)


async def service_process(
    package: str, settings: ServiceSettings, timeout: float = 60.0, log_file: Path | None = None
) -> asyncio.subprocess.Process:
    """`python -m <package>` with `settings`, returned once its gRPC health is SERVING.
    `settings.grpc.port` must be a fixed port: the test has to know where to call. With
    `log_file`, the process's output is appended there instead of the test's."""
    if not settings.grpc.port:
        raise ValueError("give the process a fixed port (flywheel_testing.backends.unused_port)")
    with _output(log_file) as output:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            package,
            env=os.environ | environment(settings),
            stdout=output,
            stderr=asyncio.subprocess.STDOUT if output is not None else None,
        )
    address = f"{settings.grpc.host}:{settings.grpc.port}"
    if await wait_until_serving([address], client_tls_for(settings.grpc.tls), timeout=timeout):
        if process.returncode is not None:
            raise RuntimeError(f"{package} exited with {process.returncode} before serving")
        process.kill()
        await process.wait()
        raise RuntimeError(f"{package} did not serve on {address} within {timeout:.0f}s")
    return process


@contextlib.contextmanager
def _output(log_file: Path | None) -> Iterator[IO[bytes] | None]:
    if log_file is None:
        yield None
        return
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as output:
        yield output


class ServiceReplica:
    """One replica of a service as a process that a test kills and starts again with the
    same settings (port, data folder, instance id), as Kubernetes restarts a container in
    its pod."""

    def __init__(self, package: str, settings: ServiceSettings, log_file: Path | None = None):
        self.package = package
        self.settings = settings
        self.log_file = log_file
        self.process: asyncio.subprocess.Process | None = None

    @property
    def address(self) -> str:
        return f"{self.settings.grpc.host}:{self.settings.grpc.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> float:
        """Start the process; the seconds it took to serve."""
        began = time.monotonic()
        self.process = await service_process(self.package, self.settings, log_file=self.log_file)
        return time.monotonic() - began

    async def kill(self) -> None:
        """SIGKILL, as a crash: nothing is flushed, released or said goodbye to."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self, timeout: float = 60.0) -> None:
        """SIGTERM, and SIGKILL when it has not exited within `timeout`."""
        if self.process is None or self.process.returncode is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            await self.kill()
