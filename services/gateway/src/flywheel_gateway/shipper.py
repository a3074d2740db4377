"""The shipper process: `python -m flywheel_gateway.shipper`, started and watched by a
serving process (`shipper_process`), sends that process's spooled prediction logs to Kafka.

Its configuration comes pickled on its standard input, which then stays open: the end of
the input (the serving process stopped it, or died) makes it ship what the spool still
holds, for at most `drain_seconds`, and exit; what is left waits in the spool for the next
shipper. Every second it writes what it did to its standard output, one JSON line (see
`ShippedCounts`), which the serving process adds to its metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import pickle
import signal
import struct
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from flywheel_common import event_loop
from flywheel_common.event_loop import EventLoop
from flywheel_common.logging import configure_logging
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings
from flywheel_common.topic_scan import event_ids_since
from flywheel_common.topics import PREDICTIONS
from flywheel_gateway.journal import Journal
from flywheel_gateway.shipping import ShippedCounts, Shipper
from flywheel_gateway.spool import SpoolReader

log = logging.getLogger(__name__)

_LENGTH = struct.Struct("<Q")
REPORT_SECONDS = 1.0


@dataclass(frozen=True)
class ShipperConfig:
    """What a shipper needs from its serving process's settings."""

    kafka: KafkaSettings
    spool: Path
    journal: Path
    """Where an earlier release journaled the logs: what it holds is sent first."""
    source: str
    client_id: str
    logs_per_record: int
    max_logs: int
    retry_seconds: float = 1.0
    drain_seconds: float = 10.0
    lock_wait_seconds: float = 30.0
    """How long to wait for the shipper of a serving process that died to finish."""
    service_name: str = "flywheel-gateway"
    log_level: str = "INFO"
    log_json: bool = True
    event_loop: EventLoop = EventLoop.UVLOOP

    def encoded(self) -> bytes:
        """The configuration as the process reads it from its input."""
        data = pickle.dumps(self)
        return _LENGTH.pack(len(data)) + data

    @classmethod
    def read(cls, stream: BinaryIO) -> ShipperConfig:
        (length,) = _LENGTH.unpack(stream.read(_LENGTH.size))
        config = pickle.loads(stream.read(length))  # from the serving process that started us
        if not isinstance(config, cls):
            raise TypeError(f"expected a ShipperConfig on the input, not {type(config)}")
        return config


def report(counts: ShippedCounts) -> str:
    """One JSON line of counts (the serving process reads it back with `counts_of`)."""
    return json.dumps(
        {
            "logged": counts.logged,
            "replayed": counts.replayed,
            "dropped": dict(counts.dropped),
            "skipped": dict(counts.skipped),
        }
    )


def counts_of(line: bytes) -> ShippedCounts:
    fields = json.loads(line)
    counts = ShippedCounts(logged=int(fields["logged"]), replayed=int(fields["replayed"]))
    counts.dropped.update({str(k): int(v) for k, v in fields["dropped"].items()})
    counts.skipped.update({str(k): int(v) for k, v in fields["skipped"].items()})
    return counts


async def ship(config: ShipperConfig, input_closed: asyncio.Event) -> None:
    """Ship until `input_closed`, then drain and return."""
    reader = await asyncio.to_thread(SpoolReader, config.spool, config.lock_wait_seconds)
    publisher = EventPublisher(config.kafka, source=config.source, client_id=config.client_id)
    shipper = Shipper(
        reader,
        publisher,
        functools.partial(event_ids_since, config.kafka, PREDICTIONS.name),
        logs_per_record=config.logs_per_record,
        max_logs=config.max_logs,
        retry_seconds=config.retry_seconds,
    )
    reporting = asyncio.create_task(_report_every_second(shipper))
    try:
        await publisher.start()
        if config.journal.exists():
            await _ship_older_journal(shipper, config.journal)
        shipping = asyncio.create_task(shipper.run())
        closed = asyncio.create_task(input_closed.wait())
        await asyncio.wait({shipping, closed}, return_when=asyncio.FIRST_COMPLETED)
        if shipping.done():
            shipping.result()  # a failure ends the process: its serving process starts another
        shipper.stop_when_empty()
        try:
            async with asyncio.timeout(config.drain_seconds):
                await shipping  # cancelled at the timeout, in a send or between two
        except TimeoutError:
            log.warning("prediction logs left in the spool for the next shipper")
    finally:
        reporting.cancel()
        _write_report(shipper)
        await publisher.stop()
        reader.close()


async def _ship_older_journal(shipper: Shipper, path: Path) -> None:
    journal = Journal(path, max_bytes=1 << 62)
    try:
        undelivered = journal.end - journal.start
        if undelivered:
            log.info(
                "sending the prediction logs an earlier release journaled",
                extra={"path": str(path), "bytes": undelivered},
            )
        await shipper.ship_journal(journal)
    finally:
        journal.close()
    _delete_journal(path)


def _delete_journal(path: Path) -> None:
    path.unlink()
    path.with_name(path.name + ".lock").unlink(missing_ok=True)


async def _report_every_second(shipper: Shipper) -> None:
    while True:
        await asyncio.sleep(REPORT_SECONDS)
        _write_report(shipper)


def _write_report(shipper: Shipper) -> None:
    counts = shipper.take_counts()
    if counts:
        sys.stdout.write(report(counts) + "\n")
        sys.stdout.flush()


def main() -> None:
    config = ShipperConfig.read(sys.stdin.buffer)
    configure_logging(config.service_name, config.log_level, config.log_json)
    # Ctrl-C reaches the whole process group: the serving process decides when this stops.
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    async def until_input_closes() -> None:
        loop = asyncio.get_running_loop()
        closed = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, closed.set)

        def wait_for_end() -> None:
            with contextlib.suppress(OSError):
                sys.stdin.buffer.read()
            loop.call_soon_threadsafe(closed.set)

        threading.Thread(target=wait_for_end, name="input", daemon=True).start()
        await ship(config, closed)

    event_loop.run(until_input_closes(), config.event_loop)


if __name__ == "__main__":
    # As the module itself, not as __main__: the configuration unpickles to its classes.
    from flywheel_gateway.shipper import main as shipper_main

    shipper_main()
