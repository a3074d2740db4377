"""Benchmark: what each Kafka compression costs the producer, per prediction log, on the
records the gateway's shipper sends.

    make bench-compression
    uv run python bench/compression.py --logs 200 --repeat 5

`flywheel.predictions` is Flywheel's largest topic, and its producer (the gateway's shipper)
compresses every record. The records here are what the shipper builds: `PredictionLogBatch`
values of `--logs` logs (`log_frames.encode`, then `pack_encoded`), each log a request of the
breast-cancer model (30 standardized features in; a label and two probabilities out), with
request and trace ids. Each codec is aiokafka's own function, as its producer calls it
(lz4 at aiokafka's fixed level 9, zstd at cramjam's default level). Printed per codec: CPU
microseconds per log (the best of `--repeat` timings) and the compression ratio, each beside
lz4's, the earlier default, measured in the same run.
"""

from __future__ import annotations

import argparse
import functools
import time
import timeit
import uuid
from collections.abc import Callable

import numpy as np
from aiokafka.codec import gzip_encode, lz4_encode, snappy_encode, zstd_encode
from sklearn.datasets import load_breast_cancer
from sklearn.preprocessing import StandardScaler

from flywheel_common.prediction_logs import pack_encoded
from flywheel_gateway import log_frames

CODECS: dict[str, Callable[[bytes], bytes]] = {
    "lz4": lz4_encode,
    "zstd": zstd_encode,
    "snappy": snappy_encode,
    "gzip": gzip_encode,
}
REFERENCE = "lz4"


def record_value(logs: int) -> bytes:
    """One `flywheel.predictions` record's value: a batch of `logs` prediction logs."""
    features = load_breast_cancer().data
    rows = StandardScaler().fit_transform(features).astype(np.float32)
    encoded = []
    for number in range(logs):
        row = rows[number % len(rows)][None, :]
        probability = np.float32(number % 100 / 100)
        encoded.append(
            (
                "breast-cancer",
                log_frames.encode(
                    request_id=str(uuid.uuid4()),
                    model="breast-cancer",
                    version=3,
                    role=1,
                    inputs={"features": row},
                    outputs={
                        "label": np.array([number % 2], np.int64),
                        "probabilities": np.array([[probability, 1 - probability]], np.float32),
                    },
                    latency=0.0012,
                    received_at=time.time(),
                    trace_id=uuid.uuid4().int,
                    span_id=uuid.uuid4().int >> 64,
                    trace_flags=1,
                    gateway_id="gateway-7d9f-0",
                ),
            )
        )
    [(record, _)] = pack_encoded(encoded, source="bench", per_record=logs)
    return record.value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--logs", type=int, default=200, help="logs per record")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    value = record_value(args.logs)
    number = 200
    measured = {}
    for name, encode in CODECS.items():
        timer = timeit.Timer(functools.partial(encode, value))
        best = min(timer.repeat(number=number, repeat=args.repeat))
        measured[name] = (best / number / args.logs * 1e6, len(value) / len(encode(value)))
    print(
        f"\nKafka compression of one flywheel.predictions record: {args.logs} logs, "
        f"{len(value):,} bytes; CPU us per log (best of {args.repeat}) and ratio, against "
        f"{REFERENCE}'s"
    )
    cost, ratio = measured[REFERENCE]
    print(f"{'codec':8}{'us/log':>10}{'ratio':>8}{'CPU vs lz4':>12}{'ratio vs lz4':>14}")
    for name, (us, gained) in measured.items():
        print(f"{name:8}{us:10.2f}{gained:8.2f}{us / cost:11.2f}x{gained / ratio:13.2f}x")


if __name__ == "__main__":
    main()
