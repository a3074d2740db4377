"""The serving process's side of its shipper: starts `python -m flywheel_gateway.shipper`,
starts another when it ends, adds what it reports to the gateway's metrics, and stops it by
closing its input (it then ships what the spool holds, for a bounded time)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time

from flywheel_gateway.predictions import METRICS, LoggerMetrics
from flywheel_gateway.shipper import ShipperConfig, counts_of

log = logging.getLogger(__name__)

_HEALTHY_SECONDS = 10.0
"""A shipper that failed after running this long is started again after the first delay."""
_MOST_DELAY = 30.0


def restart_delay(previous: float, first: float, status: int, lived: float) -> float:
    """How long to wait before starting a shipper again after one ended with `status`
    (negative: killed by a signal) after `lived` seconds. One that keeps failing soon after
    its start (Kafka away, say) is started less and less often; one that ran a while, or was
    killed, after the `first` delay."""
    if status > 0 and lived < _HEALTHY_SECONDS:
        return min(previous * 2, _MOST_DELAY)
    return first


class ShipperProcess:
    def __init__(
        self,
        config: ShipperConfig,
        meters: LoggerMetrics = METRICS,
        restart_seconds: float = 1.0,
    ) -> None:
        self._config = config
        self._metrics = meters
        self._restart_seconds = restart_seconds
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def task(self) -> asyncio.Task[None] | None:
        """Watches the process; ends only when it cannot start one."""
        return self._task

    @property
    def pid(self) -> int | None:
        """The running shipper's process id (None between two)."""
        return self._process.pid if self._process and self._process.returncode is None else None

    async def start(self) -> None:
        await self._spawn()
        self._task = asyncio.create_task(self._watch(), name="prediction-shipper")

    async def _spawn(self) -> None:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "flywheel_gateway.shipper",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        assert process.stdin is not None
        process.stdin.write(self._config.encoded())
        await process.stdin.drain()
        self._process = process
        log.info("prediction shipper started", extra={"pid": process.pid})

    async def _watch(self) -> None:
        delay = self._restart_seconds
        while True:
            process = self._process
            assert process is not None
            assert process.stdout is not None
            started = time.monotonic()
            while line := await process.stdout.readline():
                self._add(line)
            status = await process.wait()
            if self._stopping:
                return
            delay = restart_delay(delay, self._restart_seconds, status, time.monotonic() - started)
            log.error(
                "prediction shipper ended; starting another",
                extra={"pid": process.pid, "status": status, "in_seconds": delay},
            )
            await asyncio.sleep(delay)  # `stop` cancels it
            await self._spawn()

    def _add(self, line: bytes) -> None:
        try:
            counts = counts_of(line)
        except (ValueError, KeyError, TypeError):
            log.warning("prediction shipper wrote what is no report", extra={"line": line[:200]})
            return
        meters = self._metrics
        meters.logged.add(counts.logged)
        meters.replayed.add(counts.replayed)
        for reason, count in counts.dropped.items():
            meters.dropped.add(count, {"reason": reason})
        for reason, count in counts.skipped.items():
            meters.skipped.add(count, {"reason": reason})

    async def stop(self) -> None:
        """Close the shipper's input and wait for it to drain the spool (then kill it)."""
        self._stopping = True
        process = self._process
        if process is not None and process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                async with asyncio.timeout(self._config.drain_seconds + 5.0):
                    await process.wait()
            except TimeoutError:
                log.error("prediction shipper did not stop; killed", extra={"pid": process.pid})
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()
        if self._task is not None:
            self._task.cancel()  # past the process's end: only its last reports are left
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
