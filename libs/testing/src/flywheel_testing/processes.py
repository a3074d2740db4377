"""A Flywheel service as its own operating-system process, for tests that kill it.

The process reads the same settings object an in-process test would build, passed the way
operators pass them: as environment variables.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterator

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

from flywheel_common.healthcheck import wait_until_serving
from flywheel_common.settings import ServiceSettings


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
        else:
            plain = to_jsonable_python(value)
            yield key, plain if isinstance(plain, str) else json.dumps(plain)


async def service_process(
    package: str, settings: ServiceSettings, timeout: float = 60.0
) -> asyncio.subprocess.Process:
    """`python -m <package>` with `settings`, returned once its gRPC health is SERVING.
    `settings.grpc.port` must be a fixed port: the test has to know where to call."""
    if not settings.grpc.port:
        raise ValueError("give the process a fixed port (flywheel_testing.backends.unused_port)")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", package, env=os.environ | environment(settings)
    )
    address = f"{settings.grpc.host}:{settings.grpc.port}"
    if await wait_until_serving([address], timeout=timeout):
        process.kill()
        await process.wait()
        raise RuntimeError(f"{package} did not serve on {address} within {timeout:.0f}s")
    return process
