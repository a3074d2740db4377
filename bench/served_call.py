"""Benchmark: what a served gRPC call costs before any serving logic, and what each part of
the gateway's way of serving adds to it.

    uv run python bench/served_call.py --repeat 3

bench/bare_v2_server.py answers ModelInfer with a fixed response, in plaintext, and before
answering does, row by row:
- nothing (the reference: the Python gRPC ceiling);
- awaits a future resolved on the loop's next turn, as a request waiting for its batch;
- runs the request's row through the model on the event loop;
- runs it in a worker thread (`run_in_executor`), as the gateway's batcher runs a batch;
- nothing, behind Flywheel's own gRPC server (`flywheel_common.grpc_server`: the
  interceptor, the server span, the RPC metrics, the error mapping, anonymous callers).
The model is bench/gateway.py's MLP (scikit-learn's breast-cancer data, 30 features);
tritonclient.grpc.aio sends batch-1 requests at c=64 for `--seconds`. Each row is printed
with the server's and the client's CPU microseconds per request, then each row's CPU per
request against the reference's in the same run. Rows run in a rotated order on each
repeat, so that a machine that speeds up or slows down favours no row.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from gateway import GRPC, Cell, Endpoint, mlp_model, throughput
from harness import start, stop

from flywheel_common.settings import ClientTlsSettings
from flywheel_testing.backends import unused_port

HERE = Path(__file__).parent
REFERENCE = "fixed reply"
ROWS: dict[str, list[str]] = {
    REFERENCE: [],
    "awaits a future first": ["--before-answer", "future"],
    "runs the model on the loop first": ["--before-answer", "loop_run"],
    "runs the model in a thread first": ["--before-answer", "thread_run"],
    "fixed reply behind Flywheel's gRPC server": ["--spine"],
}


async def measure(row: str, model: Path, data: np.ndarray, args: argparse.Namespace) -> Cell:
    port = unused_port()
    command = [sys.executable, str(HERE / "bare_v2_server.py"), str(port), *ROWS[row]]
    command += ["--model", str(model)]
    process = await start(command, {}, port, ClientTlsSettings(enabled=False))
    try:
        return await throughput(
            Endpoint(f"127.0.0.1:{port}", GRPC),
            "mlp",
            data,
            args.concurrency,
            args.seconds,
            process.pid,
        )
    finally:
        await stop(process)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    artifact, data = mlp_model()
    names = list(ROWS)
    runs: list[dict[str, Cell]] = []
    with tempfile.TemporaryDirectory() as folder:
        model = Path(folder) / "mlp.onnx"
        model.write_bytes(artifact)
        for run in range(args.repeat):
            order = names[run % len(names) :] + names[: run % len(names)]
            runs.append({row: await measure(row, model, data, args) for row in order})
    print(
        f"\nserved call: batch-1 ModelInfer from tritonclient.grpc.aio at c={args.concurrency}, "
        f"{args.seconds:g}s per cell, plaintext; requests/s (server|client CPU us per request)"
    )
    print(f"{'server':44}" + "".join(f"{'run ' + str(n + 1):>18}" for n in range(len(runs))))
    for row in names:
        print(f"{row:44}" + "".join(f"{run[row]!s:>18}" for run in runs))
    print("\nserver CPU per request against the fixed reply's, each run and the median:")
    for row in names[1:]:
        ratios = [run[row].cpu_us / run[REFERENCE].cpu_us for run in runs]
        added = [run[row].cpu_us - run[REFERENCE].cpu_us for run in runs]
        print(
            f"  {row}: {', '.join(f'{r:.2f}' for r in ratios)}; median "
            f"{statistics.median(ratios):.2f}x ({statistics.median(added):+.0f} us)"
        )


if __name__ == "__main__":
    asyncio.run(main())
