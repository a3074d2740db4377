"""Benchmark: the HTTP stack for the gateway's KServe V2 REST endpoint (issue 17): aiohttp.web,
Flywheel's own, beside Starlette and FastAPI on uvicorn with httptools (KServe's and MLServer's
stack is FastAPI on uvicorn), uvicorn under a bare ASGI callable (uvicorn's floor) and, as a
side figure, Starlette on granian's embedded server.

    make bench-http-stack
    uv run python bench/http_stack.py [--requests 10000] [--rounds 5] [--stacks aiohttp ...]

Each stack serves the same V2-infer-shaped endpoint with the same handler (stdlib json, numpy
argmax over a 4 x 30 FP32 input; bench/http_stack/servers.py) in a server process of its own on
one asyncio event loop, embedded as the gateway would embed it beside grpc.aio. All the servers
are started, checked and warmed up first; then this process loads them in turn on loopback with
aiohttp's client, 64 requests in flight over 64 keep-alive connections, a fixed count of
requests per run, in a rotated order each round. The machine is shared: short runs taking turns
over several rounds see about the same load, and the ratios to aiohttp are taken within each
round.

Printed per stack, medians over the rounds: requests/s; the server process's CPU time per
request (user + system of all its threads, from /proc/PID/stat), which the client and other
load on the machine move far less than requests/s; how busy that kept the server (CPU seconds
per second: near 1.0 the server's one loop is the bottleneck, well below it the client is);
the client's own CPU per second; p50 and p99 latency; and the ratios to aiohttp.

The stacks other than aiohttp run in a virtualenv of their own, built with uv from
bench/http_stack/requirements.txt into .run/bench/http-stack on first use.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import NamedTuple

import aiohttp
import numpy as np
from harness import quantile, reference_venv

from flywheel_testing.backends import unused_port

HERE = Path(__file__).parent
SERVERS = HERE / "http_stack" / "servers.py"
VENV = HERE.parent / ".run" / "bench" / "http-stack"
INFER = "/v2/models/m/infer"
REFERENCE = "aiohttp"
STACKS = {
    "aiohttp": "aiohttp.web",
    "uvicorn-starlette": "Starlette on uvicorn",
    "uvicorn-fastapi": "FastAPI on uvicorn",
    "uvicorn-bare-asgi": "bare ASGI on uvicorn",
    "granian-starlette": "Starlette on granian (embedded)",
}
VERSIONS = ["aiohttp", "starlette", "fastapi", "uvicorn", "httptools", "granian"]
TICKS = os.sysconf("SC_CLK_TCK")


class Run(NamedTuple):
    requests_per_second: float
    cpu_per_request: float
    server_busy: float
    client_busy: float
    p50: float
    p99: float


def features() -> np.ndarray:
    return np.random.default_rng(17).standard_normal((4, 30)).astype(np.float32)


def request_body() -> bytes:
    rows = features()
    tensor = {"name": "features", "shape": list(rows.shape), "datatype": "FP32"}
    return json.dumps({"inputs": [tensor | {"data": rows.ravel().tolist()}]}).encode()


def handler_cpu_per_call(calls: int = 20_000) -> float:
    """CPU time of the handler alone (json in, numpy, json out), in this process: what is left
    of a stack's CPU per request once it is taken away is the stack's own."""
    spec = importlib.util.spec_from_file_location("servers", SERVERS)
    assert spec is not None
    assert spec.loader is not None
    servers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(servers)
    infer: Callable[[bytes], bytes] = servers.infer
    body = request_body()
    for _ in range(calls // 10):
        infer(body)
    started = time.process_time()
    for _ in range(calls):
        infer(body)
    return (time.process_time() - started) / calls


def cpu_seconds(pid: int) -> float:
    """User + system time of a process and all its threads so far."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime: fields 14 and 15


def own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def python_for(stack: str) -> str:
    if stack == REFERENCE:
        return sys.executable
    return str(reference_venv(VENV, HERE / "http_stack" / "requirements.txt") / "python")


def versions() -> str:
    script = (
        "import importlib.metadata as m\n"
        f"for name in {VERSIONS!r}:\n"
        "    try: print(name, m.version(name))\n"
        "    except m.PackageNotFoundError: pass\n"
    )
    found: dict[str, str] = {}
    for python in (python_for(REFERENCE), python_for("uvicorn-starlette")):
        output = subprocess.run([python, "-c", script], capture_output=True, text=True, check=True)
        found |= dict(line.split() for line in output.stdout.splitlines())
    return ", ".join(f"{name} {found[name]}" for name in VERSIONS if name in found)


async def until_ready(session: aiohttp.ClientSession, base: str, server: asyncio.Task[int]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not server.done():
        try:
            async with session.get(base + "/v2/health/ready") as response:
                if response.status == 200 and await response.read() == b"":
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.1)
    raise RuntimeError(f"the server at {base} did not become ready")


async def check_answer(session: aiohttp.ClientSession, url: str, body: bytes) -> None:
    """The stack answers what the V2 protocol asks, the same for all."""
    async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as r:
        answer = await r.json()
        content_type = r.headers.get("Content-Type", "")
    expected = features().argmax(axis=1).tolist()
    output = answer["outputs"][0]
    if (
        r.status != 200
        or not content_type.startswith("application/json")
        or answer["model_name"] != "m"
        or output != {"name": "label", "shape": [4], "datatype": "INT64", "data": expected}
    ):
        raise RuntimeError(f"{url} answered {r.status} {content_type} {answer}")


async def load(
    session: aiohttp.ClientSession, url: str, body: bytes, requests: int, concurrency: int
) -> list[float]:
    """Send `requests` requests, `concurrency` at a time; returns each one's latency."""
    remaining = requests
    latencies: list[float] = []
    headers = {"Content-Type": "application/json"}

    async def sender() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            async with session.post(url, data=body, headers=headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"{url} answered {response.status}")
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(sender() for _ in range(concurrency)))
    return latencies


class Server(NamedTuple):
    stack: str
    process: asyncio.subprocess.Process
    session: aiohttp.ClientSession
    url: str


@contextlib.asynccontextmanager
async def serving(stack: str, concurrency: int) -> AsyncIterator[Server]:
    """The stack's server, ready, checked, with a client session of `concurrency` connections;
    stopped by SIGTERM after."""
    port = unused_port()
    process = await asyncio.create_subprocess_exec(
        python_for(stack), str(SERVERS), stack, str(port), stdout=asyncio.subprocess.DEVNULL
    )
    exited = asyncio.ensure_future(process.wait())
    base = f"http://127.0.0.1:{port}"
    try:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            await until_ready(session, base, exited)
            await check_answer(session, base + INFER, request_body())
            yield Server(stack, process, session, base + INFER)
    finally:
        if not exited.done():
            process.send_signal(signal.SIGTERM)
        if await asyncio.wait_for(exited, 30) != 0:
            print(f"{stack}'s server ended with {process.returncode} on SIGTERM (stderr above)")


async def measure(server: Server, requests: int, concurrency: int) -> Run:
    body = request_body()
    server_cpu, client_cpu = cpu_seconds(server.process.pid), own_cpu_seconds()
    started = time.perf_counter()
    latencies = await load(server.session, server.url, body, requests, concurrency)
    elapsed = time.perf_counter() - started
    server_cpu = cpu_seconds(server.process.pid) - server_cpu
    client_cpu = own_cpu_seconds() - client_cpu
    return Run(
        requests_per_second=requests / elapsed,
        cpu_per_request=server_cpu / requests,
        server_busy=server_cpu / elapsed,
        client_busy=client_cpu / elapsed,
        p50=quantile(latencies, 0.5),
        p99=quantile(latencies, 0.99),
    )


def table(runs: dict[str, list[Run]], handler: float) -> str:
    """Medians over the rounds; the ratios to aiohttp are taken within each round first."""
    reference = runs[REFERENCE]
    lines = [
        "| stack | req/s | server CPU per request | of which the stack's | server busy "
        "| client busy | p50 | p99 | req/s vs aiohttp | CPU per request vs aiohttp |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for stack, measured in runs.items():

        def median(field: str, of: list[Run] = measured) -> float:
            return statistics.median(float(getattr(run, field)) for run in of)

        def ratio(field: str, of: list[Run] = measured) -> float:
            pairs = zip(of, reference, strict=True)
            return statistics.median(float(getattr(a, field) / getattr(b, field)) for a, b in pairs)

        lines.append(
            f"| {STACKS[stack]} | {median('requests_per_second'):,.0f} "
            f"| {median('cpu_per_request') * 1e6:.0f} us "
            f"| {(median('cpu_per_request') - handler) * 1e6:.0f} us | {median('server_busy'):.2f} "
            f"| {median('client_busy'):.2f} | {median('p50') * 1e3:.1f} ms "
            f"| {median('p99') * 1e3:.1f} ms | {ratio('requests_per_second'):.2f} "
            f"| {ratio('cpu_per_request'):.2f} |"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=10_000, help="measured, per run")
    parser.add_argument("--warmup", type=int, default=5_000, help="sent to each server first")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--stacks", nargs="+", choices=list(STACKS), default=list(STACKS), metavar="STACK"
    )
    args = parser.parse_args()
    stacks = [REFERENCE] + [stack for stack in args.stacks if stack != REFERENCE]
    print(versions(), flush=True)
    handler = handler_cpu_per_call()
    print(f"the handler alone: {handler * 1e6:.0f} us CPU per call", flush=True)
    load_before = os.getloadavg()[0]
    runs: dict[str, list[Run]] = {stack: [] for stack in stacks}
    async with contextlib.AsyncExitStack() as servers:
        started = [
            await servers.enter_async_context(serving(stack, args.concurrency)) for stack in stacks
        ]
        for server in started:
            await load(server.session, server.url, request_body(), args.warmup, args.concurrency)
        for round_ in range(args.rounds):
            turn = round_ % len(started)
            for server in started[turn:] + started[:turn]:
                run = await measure(server, args.requests, args.concurrency)
                runs[server.stack].append(run)
                print(
                    f"round {round_ + 1} {server.stack:18} {run.requests_per_second:8,.0f} "
                    f"req/s {run.cpu_per_request * 1e6:6.0f} us CPU/req  server busy "
                    f"{run.server_busy:.2f}  client busy {run.client_busy:.2f}  "
                    f"p50 {run.p50 * 1e3:.1f} ms  p99 {run.p99 * 1e3:.1f} ms",
                    flush=True,
                )
    print()
    print(
        f"{args.requests:,} requests per run after {args.warmup:,} of warm-up, concurrency "
        f"{args.concurrency}, medians of {args.rounds} rounds (load average {load_before:.1f} "
        f"before, {os.getloadavg()[0]:.1f} after); the stack's CPU is the server's less the "
        f"handler's {handler * 1e6:.0f} us:"
    )
    print(table(runs, handler))


if __name__ == "__main__":
    asyncio.run(main())
