"""Benchmark: what prediction logging costs the gateway's event loop, per request, apart
from gRPC, the model and the client.

    make bench-prediction-logs        # starts Kafka if needed
    uv run python bench/prediction_logs.py --batches 7 32 --rate 1000 --seconds 10

Requests arrive in batches (as the dynamic batcher answers them: `--batches` requests at
once, the batch sizes the gateway sees at c=64 and at full batches), `--rate` requests per
second. Each request takes the gateway's own ending (`Inference._log`, on the breast-cancer
model's tensors: 30 features in, a label and 2 probabilities out): its latency recorded,
then, with logging on, its log added to the cycle, built, packed, journaled and sent to
Kafka by a real `PredictionLogger` before it answers. The same requests with logging off
(the histogram only) are the reference, measured in the same run. Printed: the process's CPU
time per request (user and system, every thread: the journal's flushes and the Kafka client
count) on and off, their difference (what one log costs) and their ratio; and how the cost
splits between building each log, packing and journaling the records, and the rest (the
cycle, its future, wake-ups, sending), timed inside the logger.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings
from flywheel_common.topics import ensure_topics
from flywheel_gateway.handlers import Inference, InferenceSettings, InferRequest
from flywheel_gateway.journal import Journal
from flywheel_gateway.predictions import PredictionLogger
from flywheel_gateway.routing import Role, Route

INPUTS: dict[str, np.ndarray] = {
    "features": np.random.default_rng(0).random((1, 30), dtype=np.float32)
}
OUTPUTS: dict[str, np.ndarray] = {
    "label": np.array([1], dtype=np.int64),
    "probabilities": np.array([[0.2, 0.8]], dtype=np.float32),
}
ROUTE = Route(1, 100, Role.STABLE)


@dataclass
class Split:
    """Seconds spent inside the logger's journaling, by part."""

    building: float = 0.0
    journaling: float = 0.0


@contextmanager
def timed_parts(split: Split) -> Iterator[None]:
    """Time the logger's building of logs and its whole journaling step (build, pack,
    append), by wrapping its two methods for the block."""
    journal_logs, pack = PredictionLogger._journal_cycle, PredictionLogger._pack

    def timed_journal(self: PredictionLogger, queued: Any) -> None:
        started = time.perf_counter()
        journal_logs(self, queued)
        split.journaling += time.perf_counter() - started

    def timed_pack(self: PredictionLogger, builders: Any) -> Any:
        def timed(build: Any) -> Any:
            started = time.perf_counter()
            try:
                return build()
            finally:
                split.building += time.perf_counter() - started

        return pack(self, [functools.partial(timed, build) for build in builders])

    PredictionLogger._journal_cycle = timed_journal  # type: ignore[method-assign]
    PredictionLogger._pack = timed_pack  # type: ignore[method-assign]
    try:
        yield
    finally:
        PredictionLogger._journal_cycle = journal_logs  # type: ignore[method-assign]
        PredictionLogger._pack = pack  # type: ignore[method-assign]


async def drive(inference: Inference, batch: int, rate: float, seconds: float) -> tuple[float, int]:
    """CPU seconds per request over `seconds` of batches of `batch` requests at `rate`, and
    the requests served."""
    request = InferRequest(model="cancer", version="", request_id="r", inputs=[])
    interval = batch / rate
    served = 0
    cpu, wall = time.process_time(), time.monotonic()
    while time.monotonic() - wall < seconds:
        started = time.perf_counter()
        await asyncio.gather(
            *(inference._log(request, ROUTE, INPUTS, OUTPUTS, started) for _ in range(batch))
        )
        served += batch
        await asyncio.sleep(interval)
    return (time.process_time() - cpu) / served, served


async def measure(kafka: KafkaSettings, batch: int, rate: float, seconds: float) -> None:
    settings = InferenceSettings(gateway_id="bench")
    # `_log` is all of a request this drives: the inference needs no models.
    off, _ = await drive(Inference(None, {}, None, settings), batch, rate, seconds)  # type: ignore[arg-type]
    publisher = EventPublisher(kafka.model_copy(update={"linger_ms": 50}), source="bench")
    await publisher.start()
    with tempfile.TemporaryDirectory() as folder:
        logger = PredictionLogger(
            publisher, Journal(Path(folder) / "journal", 1 << 30), in_kafka=_nothing_in_kafka
        )
        await logger.start()
        split = Split()
        try:
            with timed_parts(split):
                on, logs = await drive(
                    Inference(None, {}, logger, settings),  # type: ignore[arg-type]
                    batch,
                    rate,
                    seconds,
                )
        finally:
            await logger.stop()
            await publisher.stop()
    per_log = on - off
    print(
        f"{batch:>5} {off * 1e6:>14,.0f} {on * 1e6:>14,.0f} {per_log * 1e6:>12,.0f} "
        f"{on / off:>8.2f}x {split.building / logs * 1e6:>10,.0f} "
        f"{(split.journaling - split.building) / logs * 1e6:>10,.0f}"
    )


async def _nothing_in_kafka(_: Any) -> set[str]:
    return set()


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("FLYWHEEL_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    )
    parser.add_argument("--batches", type=int, nargs="+", default=[7, 32])
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    kafka = KafkaSettings(bootstrap_servers=args.bootstrap)
    await ensure_topics(kafka)
    print(
        f"prediction logging, {args.rate:,.0f} requests/s for {args.seconds:.0f}s per row; "
        "CPU us per request (process, every thread)"
    )
    print(
        f"{'batch':>5} {'logging off':>14} {'logging on':>14} {'one log':>12} {'on/off':>9} "
        f"{'building':>10} {'pack+append':>10}"
    )
    for batch in args.batches:
        await measure(kafka, batch, args.rate, args.seconds)
    print(
        "one log = on - off; building and pack+append are timed inside the logger; the journal "
        "is flushed every second and records go to Kafka as the gateway sends them"
    )


if __name__ == "__main__":
    asyncio.run(main())
