"""Benchmark: what prediction logging costs the gateway's event loop, per request, apart
from gRPC, the model and the client.

    make bench-prediction-logs        # starts Kafka if needed
    uv run python bench/prediction_logs.py --batches 7 32 --rate 1000 --seconds 10

Requests arrive in batches (as the dynamic batcher answers them: `--batches` requests at
once, the batch sizes the gateway sees at c=64 and at full batches), `--rate` requests per
second. Each request takes the gateway's own ending (`Inference._log`, on the breast-cancer
model's tensors: 30 features in, a label and 2 probabilities out): its latency recorded,
then, with logging on, its log encoded as a frame and appended to the spool by a real
`PredictionLogger` before it answers, and sent to Kafka by a real shipper process
(`ShipperProcess`). The same requests with logging off (the histogram only) are the
reference, measured in the same run. Printed: this process's CPU time per request (user
and system, every thread: the spool's flushes count) on and off, their difference (what one
log costs the serving process) and their ratio; beside them, the shipper process's CPU per
log (reading the spool, building the messages, Kafka's client).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from harness import cpu_seconds

from flywheel_common.settings import KafkaSettings
from flywheel_common.topics import ensure_topics
from flywheel_gateway.handlers import Inference, InferenceSettings, InferRequest
from flywheel_gateway.predictions import PredictionLogger
from flywheel_gateway.routing import Role, Route
from flywheel_gateway.shipper import ShipperConfig
from flywheel_gateway.shipper_process import ShipperProcess
from flywheel_gateway.spool import SpoolWriter

INPUTS: dict[str, np.ndarray] = {
    "features": np.random.default_rng(0).random((1, 30), dtype=np.float32)
}
OUTPUTS: dict[str, np.ndarray] = {
    "label": np.array([1], dtype=np.int64),
    "probabilities": np.array([[0.2, 0.8]], dtype=np.float32),
}
ROUTE = Route(1, 100, Role.STABLE)


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
    with tempfile.TemporaryDirectory() as folder:
        spool = Path(folder) / "spool"
        logger = PredictionLogger(SpoolWriter(spool, 1 << 30))
        shipper = ShipperProcess(
            ShipperConfig(
                kafka=kafka.model_copy(update={"linger_ms": 50}),
                spool=spool,
                journal=Path(folder) / "predictions.journal",
                source="bench",
                client_id="bench-predictions",
                logs_per_record=200,
                max_logs=10_000,
            )
        )
        await shipper.start()
        await logger.start()
        try:
            await asyncio.sleep(3.0)  # its start (imports, Kafka's client) is no log's cost
            assert shipper.pid is not None
            shipper_cpu = cpu_seconds(shipper.pid)
            on, logs = await drive(
                Inference(None, {}, logger, settings),  # type: ignore[arg-type]
                batch,
                rate,
                seconds,
            )
            await asyncio.sleep(1.0)  # the shipper sends the last of them
            shipper_cpu = cpu_seconds(shipper.pid) - shipper_cpu
        finally:
            await logger.stop()
            await shipper.stop()
    per_log = on - off
    print(
        f"{batch:>5} {off * 1e6:>14,.0f} {on * 1e6:>14,.0f} {per_log * 1e6:>12,.0f} "
        f"{on / off:>8.2f}x {shipper_cpu / logs * 1e6:>14,.0f}"
    )


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
        f"{'shipper/log':>14}"
    )
    for batch in args.batches:
        await measure(kafka, batch, args.rate, args.seconds)
    print(
        "one log = on - off, in the serving process; shipper/log = the shipper process's CPU "
        "per log, beside it; the spool is flushed every second, records go to Kafka as the "
        "gateway's shipper sends them"
    )


if __name__ == "__main__":
    asyncio.run(main())
