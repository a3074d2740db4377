"""Where training jobs run: one interface, a local subprocess executor by default.

An executor runs one attempt of a run's training job to its end and says how it ended; it
does not interpret what the job registered (`steps.TrainingJobs` does).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from flywheel_common.training import TrainingRun
from flywheel_retrain.domain import ExecutorKind, command_line

log = logging.getLogger(__name__)

Started = Callable[[str], Awaitable[None]]
"""Called with the executor's handle of the job (process id, Job name) once it runs."""


@dataclass(frozen=True)
class JobSpec:
    run: TrainingRun
    attempt: int
    command: str
    """Shell-style command line; a leading `python` means the trigger's own interpreter."""
    timeout_seconds: float
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    image: str = ""

    @property
    def job_name(self) -> str:
        return f"retrain-{self.run.run_id[:12]}-{self.attempt}"


@dataclass(frozen=True)
class JobOutcome:
    succeeded: bool
    timed_out: bool = False
    error: str = ""


class Executor(Protocol):
    kind: ExecutorKind

    async def run(self, job: JobSpec, started: Started) -> JobOutcome: ...

    async def cancel(self, run_id: str) -> None:
        """Stop the run's job if it is running here; a no-op otherwise."""


class LocalExecutor:
    """Runs the job as a subprocess in its own process group, output captured to a file."""

    kind: ExecutorKind = ExecutorKind.LOCAL

    def __init__(self, workdir: Path | None = None, kill_grace_seconds: float = 5.0) -> None:
        self._workdir = workdir
        self._grace = kill_grace_seconds
        self._processes: dict[str, asyncio.subprocess.Process] = {}

    async def run(self, job: JobSpec, started: Started) -> JobOutcome:
        argv = command_line(job.command)
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        job.log_path.parent.mkdir(parents=True, exist_ok=True)
        environment = {**os.environ, **job.env, **job.run.environment()}
        with job.log_path.open("ab") as output:
            try:
                process = await asyncio.create_subprocess_exec(
                    *argv,
                    stdout=output,
                    stderr=asyncio.subprocess.STDOUT,
                    env=environment,
                    cwd=self._workdir,
                    start_new_session=True,
                )
            except OSError as error:
                return JobOutcome(False, error=f"cannot start {argv[0]!r}: {error}")
        self._processes[job.run.run_id] = process
        try:
            await started(str(process.pid))
            async with asyncio.timeout(job.timeout_seconds):
                code = await process.wait()
        except TimeoutError:
            await self._terminate(process)
            return JobOutcome(
                False, timed_out=True, error=f"exceeded its {job.timeout_seconds:.0f}s limit"
            )
        except BaseException:
            # Cancelled, or the run could not record its start: the job must not outlive it.
            await asyncio.shield(self._terminate(process))
            raise
        finally:
            self._processes.pop(job.run.run_id, None)
        if code != 0:
            reason = f"signal {-code}" if code < 0 else f"code {code}"
            return JobOutcome(False, error=f"the training job exited with {reason}")
        return JobOutcome(True)

    async def cancel(self, run_id: str) -> None:
        process = self._processes.get(run_id)
        if process is not None:
            await self._terminate(process)

    async def _terminate(self, process: asyncio.subprocess.Process) -> None:
        """SIGTERM to the job's whole process group, SIGKILL after the grace period."""
        for sent in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sent)
            try:
                async with asyncio.timeout(self._grace):
                    await process.wait()
                return
            except TimeoutError:
                log.warning("training job %d ignored %s", process.pid, sent.name)
