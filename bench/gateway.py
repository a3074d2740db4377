"""Benchmark: the gateway under tritonclient's asyncio clients, over gRPC and HTTP/REST, with
same-run references.

    make bench-gateway        # starts Kafka if needed
    uv run python bench/gateway.py --seconds 5 --concurrency 1 4 16 64 [--workers 1 2]
    uv run python bench/gateway.py --repeat 3   # issue 17: the comparison at c=64, 3 times
    uv run python bench/gateway.py --tls-only --seconds 5   # just TLS on vs off
    uv run python bench/gateway.py --logging-pairs 8   # just logging off vs on, 8 pairs
    bench/gpu.sh              # on a machine with an NVIDIA GPU: --execution-provider cuda

An MLP trained on scikit-learn's breast-cancer data (30 features) is exported to ONNX and
registered; batch-1 inference requests come from tritonclient.grpc.aio (ModelInfer) and
tritonclient.http.aio (POST .../infer) at each concurrency. Printed side by side, in one run:
- onnxruntime called in-process, one call at a time (the model's own cost), on the
  execution provider the gateways are given (`--execution-provider`; the CPU by default);
- a bare grpc.aio V2 server returning a fixed response over TLS (the Python gRPC ceiling);
- this gateway with batching off and on, prediction logging off and on (each log written
  to the journal before its request is answered, the journal flushed to the disk every
  second), and logging with a flush before every answer (`FSYNC_INTERVAL_MS=0`): the
  price of journaling and of its durability; all over TLS (its default; the clients trust
  the benchmark's own CA), and once more in plaintext (GRPC__TLS__ENABLED=false): TLS on
  vs off in the same run;
- the same gateway process (batching and logging on) over its REST API (HTTP__PORT), with
  the tensors in binary (the binary tensor data extension, as tritonclient sends them by
  default) and as JSON values (inputs and outputs), over TLS and in plaintext;
- MLServer serving the same ONNX file through bench/mlserver/onnx_runtime.py with its
  adaptive batching (max batch 32, like the gateway), over gRPC and over its REST endpoint
  (JSON values: MLServer's REST API takes no binary tensor data). MLServer gets its own
  virtualenv, built with uv from bench/mlserver/requirements.txt into .run/bench/mlserver
  on first use. MLServer 1.7.1 has no TLS setting, so it serves in plaintext, and the targets
  compare it with the gateway in plaintext (the gateway's TLS rows are shown beside them).

Beside each rate, the server's CPU time per request: user and system CPU seconds of the
server process and its children (MLServer's inference workers, the gateway's WORKERS) over
the measured seconds, from /proc, divided by the requests answered; then the client's (this
process). Client, servers and the Kafka broker share the machine's cores, so rates depend on
how the client shares them; the server's CPU per request is the serving path's own cost,
and the client's says when the client, not the server, sets the rate.

`--repeat N` measures only the rows the targets compare (bare server; gateway over gRPC with
logging off and on, over HTTP, in plaintext; MLServer over gRPC and HTTP unless
--gateway-only) at the highest --concurrency, N times, and prints each run, the medians and
each run's ratios with their medians. Each run starts one server further along the list
(run 2 with the gateway, ..., then wrapping around), so that a machine that speeds up or
slows down during a run does not favour the same server in every run.

`--logging-pairs N` measures only what prediction logging costs: the gateway (batching on,
plaintext, gRPC at the highest --concurrency) with logging off, then on, N times, the order
swapped in every other pair so that neither side always runs second. It prints each pair,
then the medians of the pairs' ratios, rate and CPU per request: on a shared machine,
whose speed moves by more than the cost measured, many pairs resolve what three runs of
`--repeat` cannot.

The servers run in their own processes: tritonclient registers the same protobuf names as
Flywheel's `inference` package, so it cannot share a process with them. Each gateway's
execution provider, as its REST model metadata reports it, is printed; with
`--execution-provider cuda` a gateway that runs on anything else stops the benchmark, so no
figure is ever labelled CUDA that the CPU measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import shutil
import ssl
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import onnxruntime
import tritonclient.grpc.aio as triton_aio
import tritonclient.http.aio as triton_http_aio
from harness import cpu_seconds, reference_venv, register, start, stop
from sklearn.datasets import load_breast_cancer
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
from tritonclient import http as triton_http
from tritonclient.grpc import InferInput
from tritonclient.utils import InferenceServerException

from flywheel.deployer.v1 import events_pb2 as deployer_events
from flywheel.deployer.v1 import types_pb2 as deployer_types
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import ClientTlsSettings, KafkaSettings
from flywheel_common.topics import DEPLOYMENTS, ensure_topics
from flywheel_gateway.cuda import CudaLibraries
from flywheel_gateway.providers import CPU, CUDA
from flywheel_sdk import to_onnx
from flywheel_testing.backends import unused_port
from flywheel_testing.tls import pki, tls_environment

HERE = Path(__file__).parent
MLSERVER_VENV = HERE.parent / ".run" / "bench" / "mlserver"
OUTPUTS = ("label", "probabilities")


def mlp_model() -> tuple[bytes, np.ndarray]:
    """The model's ONNX file and its rows (the 30 features, standardized, as float32)."""
    features, labels = load_breast_cancer(return_X_y=True)
    features = StandardScaler().fit_transform(features).astype(np.float32)
    model = MLPClassifier(hidden_layer_sizes=(64, 32), max_iter=300, random_state=0)
    return to_onnx(model.fit(features, labels), features.shape[1]).onnx, features


async def deploy(bootstrap: str, model: str) -> None:
    publisher = EventPublisher(KafkaSettings(bootstrap_servers=bootstrap), source="bench")
    await publisher.start()
    state = deployer_events.DeploymentState(
        model=model,
        routes=[deployer_types.TrafficRoute(version=1, weight_percent=100)],
        generation=1,
    )
    await publisher.publish(DEPLOYMENTS, state, subject=model)
    await publisher.stop()


async def model_ready(client: triton_aio.InferenceServerClient, model: str) -> bool:
    try:
        return bool(await client.is_model_ready(model))
    except InferenceServerException:  # unreachable, or NOT_FOUND until the model is loaded
        return False


def mlserver_executable() -> Path:
    """MLServer in a virtualenv of its own: its pins (FastAPI, protobuf) are not Flywheel's."""
    return reference_venv(MLSERVER_VENV, HERE / "mlserver" / "requirements.txt") / "mlserver"


def mlserver_repository(
    folder: Path, model: str, artifact: bytes, ports: dict[str, int], workers: int = 1
) -> Path:
    """A model repository MLServer loads: the ONNX file, the runtime, and both settings files;
    `workers` inference processes (MLServer's parallel workers)."""
    repository = folder / f"mlserver-{workers}"
    model_folder = repository / model
    model_folder.mkdir(parents=True)
    (model_folder / "model.onnx").write_bytes(artifact)
    shutil.copy(HERE / "mlserver" / "onnx_runtime.py", model_folder / "onnx_runtime.py")
    settings = {f"{name}_port": port for name, port in ports.items()}
    (repository / "settings.json").write_text(
        json.dumps(
            {
                **settings,
                "debug": False,
                "parallel_workers": workers,
                "metrics_dir": str(repository / "metrics"),  # not .metrics in the cwd
            }
        )
    )
    (model_folder / "model-settings.json").write_text(
        json.dumps(
            {
                "name": model,
                "implementation": "onnx_runtime.OnnxRuntime",
                "max_batch_size": 32,
                "max_batch_time": 0.002,
                "parameters": {"uri": "./model.onnx"},
            }
        )
    )
    return repository


def triton_client(address: str, ca_file: str) -> triton_aio.InferenceServerClient:
    """tritonclient over TLS trusting `ca_file`, or plaintext when it is empty."""
    if not ca_file:
        return triton_aio.InferenceServerClient(address)
    return triton_aio.InferenceServerClient(address, ssl=True, root_certificates=ca_file)


async def wait_model_ready(address: str, model: str, ca_file: str, timeout: float = 120) -> None:
    client = triton_client(address, ca_file)
    try:
        async with asyncio.timeout(timeout):
            while not await model_ready(client, model):
                await asyncio.sleep(0.2)
    finally:
        await client.close()


@dataclass(frozen=True)
class Via:
    """How the client calls a server: gRPC, or HTTP with the tensors in binary (after the
    JSON, tritonclient's default) or as JSON values."""

    protocol: str = "grpc"
    binary: bool = True


GRPC = Via()
HTTP_BINARY = Via("http")
HTTP_JSON = Via("http", binary=False)


@dataclass(frozen=True)
class Endpoint:
    address: str
    via: Via
    ca_file: str = ""
    """TLS trusting this CA; plaintext when empty."""


class Caller(Protocol):
    async def infer(self, row: np.ndarray) -> None: ...

    async def close(self) -> None: ...


class GrpcCaller:
    def __init__(self, endpoint: Endpoint, model: str) -> None:
        self._client = triton_client(endpoint.address, endpoint.ca_file)
        self._model = model

    async def infer(self, row: np.ndarray) -> None:
        tensor = InferInput("features", [1, len(row)], "FP32")
        tensor.set_data_from_numpy(row[None, :])
        await self._client.infer(self._model, [tensor])

    async def close(self) -> None:
        await self._client.close()


class HttpCaller:
    def __init__(self, endpoint: Endpoint, model: str) -> None:
        secure = bool(endpoint.ca_file)
        context = ssl.create_default_context(cafile=endpoint.ca_file) if secure else None
        self._client = triton_http_aio.InferenceServerClient(
            endpoint.address, ssl=secure, ssl_context=context
        )
        self._model = model
        self._binary = endpoint.via.binary
        # JSON bodies say so: MLServer (FastAPI) refuses a body of tritonclient's default
        # type, application/octet-stream, with a 422
        self._headers = None if self._binary else {"Content-Type": "application/json"}
        # tritonclient asks for every output in binary unless outputs are named
        self._outputs = (
            None
            if self._binary
            else [triton_http.InferRequestedOutput(name, binary_data=False) for name in OUTPUTS]
        )

    async def infer(self, row: np.ndarray) -> None:
        tensor = triton_http.InferInput("features", [1, len(row)], "FP32")
        tensor.set_data_from_numpy(row[None, :], binary_data=self._binary)
        await self._client.infer(
            self._model, [tensor], outputs=self._outputs, headers=self._headers
        )

    async def close(self) -> None:
        await self._client.close()


def caller(endpoint: Endpoint, model: str) -> Caller:
    return (
        GrpcCaller(endpoint, model)
        if endpoint.via.protocol == "grpc"
        else HttpCaller(endpoint, model)
    )


@dataclass(frozen=True)
class Cell:
    """One measurement: requests/s, and the CPU microseconds per request of the server and
    of the client (this process: tritonclient, its event loop and gRPC's threads)."""

    rate: float
    cpu_us: float
    client_us: float

    def __str__(self) -> str:
        return f"{self.rate:,.0f} ({self.cpu_us:.0f}|{self.client_us:.0f})"

    @staticmethod
    def median(cells: list[Cell]) -> Cell:
        return Cell(
            statistics.median(cell.rate for cell in cells),
            statistics.median(cell.cpu_us for cell in cells),
            statistics.median(cell.client_us for cell in cells),
        )


Results = dict[str, dict[int, Cell]]


async def throughput(
    endpoint: Endpoint, model: str, rows: np.ndarray, concurrency: int, seconds: float, pid: int
) -> Cell:
    """Completed batch-1 requests per second over `seconds`, after a short warm-up, and the
    CPU time process `pid` and this one spent per request meanwhile."""
    client = caller(endpoint, model)
    deadline = 0.0
    done = 0

    async def worker(offset: int) -> None:
        nonlocal done
        index = offset
        while time.monotonic() < deadline:
            await client.infer(rows[index % len(rows)])
            done += 1
            index += concurrency

    deadline = time.monotonic() + 1.0
    await asyncio.gather(*(worker(i) for i in range(concurrency)))  # warm-up
    done = 0
    cpu_before, client_before = cpu_seconds(pid), time.process_time()
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.monotonic() - started
    cpu, client_cpu = cpu_seconds(pid) - cpu_before, time.process_time() - client_before
    await client.close()
    return Cell(done / elapsed, cpu / done * 1e6, client_cpu / done * 1e6)


def execution_provider(http_port: int, model: str, ca_file: str) -> str:
    """The provider the gateway's version runs on, from its REST model metadata."""
    scheme, context = (
        ("https", ssl.create_default_context(cafile=ca_file)) if ca_file else ("http", None)
    )
    url = f"{scheme}://127.0.0.1:{http_port}/v2/models/{model}"
    with urllib.request.urlopen(url, context=context, timeout=10) as answer:
        return str(json.load(answer)["parameters"]["execution_provider"])


def in_process(artifact: bytes, rows: np.ndarray, seconds: float, provider: str | None) -> float:
    """One session.run at a time on `provider` (the CPU unless cuda)."""
    providers = [CPU]
    if provider == "cuda":
        CudaLibraries.preload()
        providers = [CUDA, CPU]
    session = onnxruntime.InferenceSession(artifact, providers=providers)
    if provider == "cuda" and session.get_providers()[0] != CUDA:
        raise SystemExit(f"in-process onnxruntime runs on {session.get_providers()[0]}, not CUDA")
    for _ in range(10):  # warm-up: the first runs on a GPU allocate and pick kernels
        session.run(None, {"features": rows[:1]})
    done, started = 0, time.monotonic()
    while time.monotonic() - started < seconds:
        session.run(None, {"features": rows[done % len(rows)][None, :]})
        done += 1
    return done / (time.monotonic() - started)


@dataclass(frozen=True)
class Bench:
    """What every server of a run shares: the model, where things are, how long to measure."""

    model: str
    artifact: bytes
    rows: np.ndarray
    folder: Path
    bootstrap: str
    registry_port: int
    seconds: float
    concurrency: list[int]
    execution_provider: str | None
    """The gateways' EXECUTION_PROVIDER; their default when None."""
    providers: dict[str, str] = field(default_factory=dict)
    """Each gateway row's execution provider, as its REST model metadata reports it."""

    async def measure(
        self, process: asyncio.subprocess.Process, rows: dict[str, Endpoint]
    ) -> Results:
        return {
            label: {
                c: await throughput(endpoint, self.model, self.rows, c, self.seconds, process.pid)
                for c in self.concurrency
            }
            for label, endpoint in rows.items()
        }


def batching(size: str, logging_on: str, fsync_interval_ms: str = "1000") -> dict[str, str]:
    return {
        "FLYWHEEL_GATEWAY_MAX_BATCH_SIZE": size,
        "FLYWHEEL_GATEWAY_LOG_PREDICTIONS": logging_on,
        "FLYWHEEL_GATEWAY_PREDICTION_JOURNAL_FSYNC_INTERVAL_MS": fsync_interval_ms,
    }


@contextlib.asynccontextmanager
async def stopped_after(
    process: asyncio.subprocess.Process,
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Stops the server when the block ends, also when starting to use it failed."""
    try:
        yield process
    finally:
        if process.returncode is None:
            await stop(process)


async def gateway(
    bench: Bench, settings: dict[str, str], rows: dict[str, Via], tls: bool = True
) -> Results:
    """One gateway process with `settings`, measured for each row through its gRPC or its
    REST port."""
    grpc_port, http_port = unused_port(), unused_port()
    chosen = bench.execution_provider
    env = {
        "FLYWHEEL_GATEWAY_GRPC__PORT": str(grpc_port),
        "FLYWHEEL_GATEWAY_HTTP__PORT": str(http_port),
        **({"FLYWHEEL_GATEWAY_EXECUTION_PROVIDER": chosen} if chosen else {}),
        "FLYWHEEL_GATEWAY_DATA_DIR": f"{bench.folder}/gateway-{grpc_port}",
        "FLYWHEEL_GATEWAY_TELEMETRY__METRICS_PORT": "-1",
        "FLYWHEEL_GATEWAY_TELEMETRY__LOG_LEVEL": "WARNING",
        "FLYWHEEL_GATEWAY_KAFKA__BOOTSTRAP_SERVERS": bench.bootstrap,
        "FLYWHEEL_GATEWAY_AUTH__ALLOW_ANONYMOUS": "true",
        "FLYWHEEL_GATEWAY_REGISTRY_ADDRESS": f"127.0.0.1:{bench.registry_port}",
        **tls_environment("FLYWHEEL_GATEWAY_"),
        **(settings if tls else settings | {"FLYWHEEL_GATEWAY_GRPC__TLS__ENABLED": "false"}),
    }
    ca_file = str(pki().ca_file) if tls else ""
    client_tls = pki().client_tls() if tls else ClientTlsSettings(enabled=False)
    command = [sys.executable, "-m", "flywheel_gateway"]
    async with stopped_after(await start(command, env, grpc_port, client_tls)) as process:
        workers = int(settings.get("FLYWHEEL_GATEWAY_WORKERS", "1"))
        for _ in range(8 * workers if workers > 1 else 1):  # reach every worker
            await wait_model_ready(f"127.0.0.1:{grpc_port}", bench.model, ca_file)
        provider = await asyncio.to_thread(execution_provider, http_port, bench.model, ca_file)
        if chosen == "cuda" and provider != CUDA:
            raise SystemExit(
                f"{', '.join(rows)}: the gateway runs on {provider}, not CUDA; its warning "
                "'CUDA wanted but not used' says why"
            )
        bench.providers.update(dict.fromkeys(rows, provider))
        ports = {"grpc": grpc_port, "http": http_port}
        return await bench.measure(
            process,
            {
                label: Endpoint(f"127.0.0.1:{ports[via.protocol]}", via, ca_file)
                for label, via in rows.items()
            },
        )


async def bare(bench: Bench) -> Results:
    port = unused_port()
    server = pki().server_tls()
    command = [sys.executable, str(HERE / "bare_v2_server.py"), str(port)]
    endpoint = Endpoint(f"127.0.0.1:{port}", GRPC, str(pki().ca_file))
    command += [str(server.cert_file), str(server.key_file)]
    async with stopped_after(await start(command, {}, port)) as process:
        return await bench.measure(process, {BARE: endpoint})


async def mlserver(bench: Bench, workers: int, rows: dict[str, Via]) -> Results:
    """MLServer with `workers` parallel workers, plaintext, through its gRPC or REST port."""
    ports = {"grpc": unused_port(), "http": unused_port(), "metrics": unused_port()}
    repository = mlserver_repository(
        bench.folder / f"mlserver-{ports['grpc']}", bench.model, bench.artifact, ports, workers
    )
    process = await asyncio.create_subprocess_exec(
        str(mlserver_executable()),
        "start",
        str(repository),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with stopped_after(process):
        await wait_model_ready(f"127.0.0.1:{ports['grpc']}", bench.model, "")
        return await bench.measure(
            process,
            {
                label: Endpoint(f"127.0.0.1:{ports[via.protocol]}", via)
                for label, via in rows.items()
            },
        )


BARE = "bare grpc.aio, TLS (fixed reply)"
QUIET = "gateway, batching on, logging off"
TLS_ON = "gateway, batching on, logging on"
FSYNC = "gateway, batching on, logging+fsync"
TLS_OFF = "the same, plaintext (TLS off)"
REST_BINARY = "gateway REST, binary tensors"
REST_JSON = "gateway REST, JSON tensors"
REST_PLAIN_BINARY = "gateway REST, plaintext, binary"
REST_PLAIN_JSON = "gateway REST, plaintext, JSON"
MLSERVER = "MLServer 1.7.1, adaptive batching"
MLSERVER_REST = "MLServer 1.7.1 REST, JSON tensors"


def workers_label(workers: int) -> str:
    return f"gateway, {workers} workers, batching+logging"


def mlserver_workers_label(workers: int) -> str:
    return f"MLServer 1.7.1, {workers} parallel workers"


async def comparison(
    bench: Bench, full: bool, workers: list[int], with_mlserver: bool, rotation: int = 0
) -> Results:
    """The rows the targets compare; with `full`, also batching off, fsync and workers. The
    servers are measured in turn, starting `rotation` places along the list, so that across
    repeats the machine's drift does not always favour the same server."""
    servers: list[Callable[[], Awaitable[Results]]] = [functools.partial(bare, bench)]
    if full:
        servers += [
            functools.partial(
                gateway,
                bench,
                batching("1", "false"),
                {"gateway, batching off, logging off": GRPC},
            ),
            functools.partial(
                gateway, bench, batching("1", "true"), {"gateway, batching off, logging on": GRPC}
            ),
        ]
    servers += [
        functools.partial(gateway, bench, batching("32", "false"), {QUIET: GRPC}),
        functools.partial(
            gateway,
            bench,
            batching("32", "true"),
            {TLS_ON: GRPC, REST_BINARY: HTTP_BINARY, REST_JSON: HTTP_JSON},
        ),
    ]
    if full:
        servers.append(
            functools.partial(
                gateway, bench, batching("32", "true", fsync_interval_ms="0"), {FSYNC: GRPC}
            )
        )
    servers.append(
        functools.partial(
            gateway,
            bench,
            batching("32", "true"),
            {TLS_OFF: GRPC, REST_PLAIN_BINARY: HTTP_BINARY, REST_PLAIN_JSON: HTTP_JSON},
            tls=False,
        )
    )
    for count in [w for w in workers if w > 1] if full else []:
        servers.append(
            functools.partial(
                gateway,
                bench,
                {"FLYWHEEL_GATEWAY_WORKERS": str(count)},
                {workers_label(count): GRPC},
            )
        )
    if with_mlserver:
        servers.append(
            functools.partial(mlserver, bench, 1, {MLSERVER: GRPC, MLSERVER_REST: HTTP_JSON})
        )
        for count in [w for w in workers if w > 1] if full else []:
            servers.append(
                functools.partial(mlserver, bench, count, {mlserver_workers_label(count): GRPC})
            )
    start = rotation % len(servers)
    measured = {
        index: await servers[index]() for index in [*range(start, len(servers)), *range(start)]
    }
    results: Results = {}
    for index in range(len(servers)):  # printed in the list's order, whatever order they ran in
        results |= measured[index]
    return results


@dataclass(frozen=True)
class Ratio:
    """A figure of one run at one concurrency, from two of its rows."""

    name: str
    numerator: str
    denominator: str
    target: str = ""
    met: Callable[[float], bool] | None = None
    cost: bool = False
    """Shown as 1 - numerator / denominator, in %."""
    cpu: bool = False
    """Of the CPU per request instead of the rate."""

    def of(self, cells: dict[str, Cell]) -> float | None:
        if self.numerator not in cells or self.denominator not in cells:
            return None
        top, bottom = cells[self.numerator], cells[self.denominator]
        value = top.cpu_us / bottom.cpu_us if self.cpu else top.rate / bottom.rate
        return 1 - value if self.cost else value

    def show(self, value: float) -> str:
        text = f"{value:.1%}" if self.cost else f"{value:.2f}x"
        if self.met is None:
            return text
        return f"{text} (target {self.target}: {'met' if self.met(value) else 'MISSED'})"


RATIOS = [
    # MLServer 1.7.1 has no TLS setting for either endpoint: the targets compare the gateway
    # in plaintext with it, like for like; the gateway's TLS rows are shown beside them.
    Ratio(
        "gRPC: gateway (batching, logging, plaintext) / MLServer (plaintext)",
        TLS_OFF,
        MLSERVER,
        ">= 2.5x",
        lambda value: value >= 2.5,
    ),
    Ratio("gRPC: gateway (batching, logging, TLS) / MLServer (plaintext)", TLS_ON, MLSERVER),
    Ratio(
        "gRPC: logging cost (logging on against off)",
        TLS_ON,
        QUIET,
        "< 5%",
        lambda value: value < 0.05,
        cost=True,
    ),
    Ratio(
        "HTTP: gateway REST (plaintext, JSON) / MLServer REST (plaintext, JSON)",
        REST_PLAIN_JSON,
        MLSERVER_REST,
        ">= 2x",
        lambda value: value >= 2.0,
    ),
    Ratio("HTTP: gateway REST (TLS, JSON) / MLServer REST", REST_JSON, MLSERVER_REST),
    Ratio("HTTP: gateway REST (TLS, binary) / MLServer REST (JSON)", REST_BINARY, MLSERVER_REST),
    Ratio(
        "HTTP: gateway REST (plaintext, binary) / MLServer REST", REST_PLAIN_BINARY, MLSERVER_REST
    ),
    Ratio("gateway over HTTP (binary) / over gRPC, TLS", REST_BINARY, TLS_ON),
    Ratio("gateway over TLS / in plaintext, gRPC", TLS_ON, TLS_OFF),
    Ratio("gateway (batching, logging) / bare server", TLS_ON, BARE),
    Ratio("fsync before every answer costs", FSYNC, TLS_ON, cost=True),
    Ratio("CPU per request: gateway gRPC (TLS) / bare server", TLS_ON, BARE, cpu=True),
    Ratio("CPU per request: gateway logging on / off", TLS_ON, QUIET, cpu=True),
    Ratio("CPU per request: gateway REST (TLS, binary) / gRPC", REST_BINARY, TLS_ON, cpu=True),
    Ratio("CPU per request: MLServer gRPC / gateway gRPC, plaintext", MLSERVER, TLS_OFF, cpu=True),
    Ratio("CPU per request: MLServer gRPC / gateway gRPC, TLS", MLSERVER, TLS_ON, cpu=True),
    Ratio(
        "CPU per request: MLServer REST / gateway REST JSON, plaintext",
        MLSERVER_REST,
        REST_PLAIN_JSON,
        cpu=True,
    ),
    Ratio(
        "CPU per request: MLServer REST / gateway REST JSON, TLS",
        MLSERVER_REST,
        REST_JSON,
        cpu=True,
    ),
]


def print_table(columns: list[str], rows: dict[str, list[Cell]]) -> None:
    print(f"{'server':<38}" + "".join(f"{column:>22}" for column in columns))
    for label, cells in rows.items():
        print(f"{label:<38}" + "".join(f"{cell!s:>22}" for cell in cells))


def print_providers(args: argparse.Namespace, providers: dict[str, str]) -> None:
    print(
        f"gateways' execution provider (REST model metadata, --execution-provider "
        f"{args.execution_provider or 'default'}): " + ", ".join(sorted(set(providers.values())))
    )


def report(
    args: argparse.Namespace, results: Results, providers: dict[str, str], ort: float
) -> None:
    print(
        f"\ngateway: batch-1 inference from tritonclient.grpc.aio and tritonclient.http.aio, "
        f"{args.seconds:g}s per cell, MLP 30-64-32-2 on breast cancer; requests/s "
        "(server|client CPU us per request); TLS unless the row says otherwise"
    )
    reference = CUDA if args.execution_provider == "cuda" else CPU
    print(f"onnxruntime in-process, one call at a time, {reference}: {ort:,.0f}/s")
    print_providers(args, providers)
    print_table(
        [f"c={c}" for c in args.concurrency],
        {label: [row[c] for c in args.concurrency] for label, row in results.items()},
    )
    top = max(args.concurrency)
    cells = {label: row[top] for label, row in results.items()}
    print(f"\nat c={top}:")
    for ratio in RATIOS:
        value = ratio.of(cells)
        if value is not None:
            print(f"  {ratio.name}: {ratio.show(value)}")
    for workers in [w for w in args.workers if w > 1]:
        ours = cells[workers_label(workers)].rate
        print(f"  {workers} workers: gateway / its 1-worker self = {ours / cells[TLS_ON].rate:.2f}")
        if mlserver_workers_label(workers) in cells:
            theirs = cells[mlserver_workers_label(workers)].rate
            print(f"  {workers} workers: gateway / MLServer = {ours / theirs:.2f}")


def report_repeats(
    args: argparse.Namespace, runs: list[Results], providers: dict[str, str]
) -> None:
    top = max(args.concurrency)
    print(
        f"\ngateway: {len(runs)} runs at c={top}, {args.seconds:g}s per cell; requests/s "
        "(server|client CPU us per request); TLS unless the row says otherwise"
    )
    print_providers(args, providers)
    columns = [f"run {number}" for number in range(1, len(runs) + 1)] + ["median"]
    rows = {}
    for label in runs[0]:
        cells = [run[label][top] for run in runs]
        rows[label] = [*cells, Cell.median(cells)]
    print_table(columns, rows)
    print("\nratios of each run, and their median:")
    for ratio in RATIOS:
        values = [ratio.of({label: row[top] for label, row in run.items()}) for run in runs]
        if any(value is None for value in values):
            continue
        known = [value for value in values if value is not None]
        each = ", ".join(f"{value:.1%}" if ratio.cost else f"{value:.2f}" for value in known)
        print(f"  {ratio.name}: {each}; median {ratio.show(statistics.median(known))}")


LOGGING_OFF = "logging off"
LOGGING_ON = "logging on"


async def logging_pairs(bench: Bench, pairs: int) -> list[dict[str, Cell]]:
    """The gateway in plaintext with logging off and on, `pairs` times (see the module)."""
    top = max(bench.concurrency)
    measured = []
    for pair in range(pairs):
        order = [LOGGING_OFF, LOGGING_ON] if pair % 2 == 0 else [LOGGING_ON, LOGGING_OFF]
        cells = {}
        for label in order:
            logging_on = "true" if label == LOGGING_ON else "false"
            results = await gateway(bench, batching("32", logging_on), {label: GRPC}, tls=False)
            cells[label] = results[label][top]
        measured.append(cells)
    return measured


def report_logging_pairs(args: argparse.Namespace, pairs: list[dict[str, Cell]]) -> None:
    print(
        f"\nprediction logging: the gateway in plaintext (batching on) over gRPC at "
        f"c={max(args.concurrency)}, {args.seconds:g}s per cell, logging off and on in "
        f"{len(pairs)} pairs; requests/s (server|client CPU us per request)"
    )
    print_table(
        [f"pair {number}" for number in range(1, len(pairs) + 1)],
        {label: [pair[label] for pair in pairs] for label in (LOGGING_OFF, LOGGING_ON)},
    )
    costs = [1 - pair[LOGGING_ON].rate / pair[LOGGING_OFF].rate for pair in pairs]
    cpu = [pair[LOGGING_ON].cpu_us / pair[LOGGING_OFF].cpu_us for pair in pairs]
    print(
        f"  logging cost (1 - on / off): {', '.join(f'{c:.1%}' for c in costs)}; "
        f"median {statistics.median(costs):.1%} (target < 5%)"
    )
    print(
        f"  CPU per request, on / off: {', '.join(f'{c:.2f}' for c in cpu)}; "
        f"median {statistics.median(cpu):.2f}x"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument(
        "--bootstrap", default=os.environ.get("FLYWHEEL_TEST_KAFKA_BOOTSTRAP", "127.0.0.1:19092")
    )
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=[1],
        help="also measure the gateway (WORKERS) and MLServer (parallel workers) with these",
    )
    parser.add_argument(
        "--gateway-only", action="store_true", help="skip MLServer (a quick check of the bench)"
    )
    parser.add_argument(
        "--tls-only",
        action="store_true",
        help="only the gateway (batching, logging) over TLS and in plaintext",
    )
    parser.add_argument(
        "--repeat",
        type=int,
        default=0,
        help="only the compared rows, at the highest concurrency, this many times; medians",
    )
    parser.add_argument(
        "--logging-pairs",
        type=int,
        default=0,
        help="only the gateway with logging off and on, this many pairs, at the highest "
        "concurrency; each pair's ratios and their medians",
    )
    parser.add_argument(
        "--execution-provider",
        choices=["auto", "cpu", "cuda"],
        help="the gateways' EXECUTION_PROVIDER and the in-process reference's provider; with "
        "cuda, a gateway that does not run on CUDA stops the benchmark",
    )
    args = parser.parse_args()
    if args.repeat or args.logging_pairs:
        args.concurrency = [max(args.concurrency)]
    await ensure_topics(KafkaSettings(bootstrap_servers=args.bootstrap))
    artifact, rows = mlp_model()
    model = f"mlp-{os.getpid()}"

    with tempfile.TemporaryDirectory() as folder:
        registry_port = unused_port()
        registry = await start(
            [sys.executable, "-m", "flywheel_registry"],
            {
                "FLYWHEEL_REGISTRY_GRPC__PORT": str(registry_port),
                "FLYWHEEL_REGISTRY_DATA_DIR": f"{folder}/registry",
                "FLYWHEEL_REGISTRY_TELEMETRY__METRICS_PORT": "-1",
                "FLYWHEEL_REGISTRY_KAFKA__BOOTSTRAP_SERVERS": args.bootstrap,
                "FLYWHEEL_REGISTRY_AUTH__ALLOW_ANONYMOUS": "true",
                **tls_environment("FLYWHEEL_REGISTRY_"),
            },
            registry_port,
        )
        async with stopped_after(registry):
            await register(f"127.0.0.1:{registry_port}", model, artifact)
            await deploy(args.bootstrap, model)
            bench = Bench(
                model,
                artifact,
                rows,
                Path(folder),
                args.bootstrap,
                registry_port,
                args.seconds,
                args.concurrency,
                args.execution_provider,
            )
            if args.repeat:
                runs = [
                    await comparison(bench, False, [], not args.gateway_only, rotation=run)
                    for run in range(args.repeat)
                ]
            elif args.logging_pairs:
                report_logging_pairs(args, await logging_pairs(bench, args.logging_pairs))
                return
            elif args.tls_only:
                results = await gateway(bench, batching("32", "true"), {TLS_ON: GRPC})
                results |= await gateway(bench, batching("32", "true"), {TLS_OFF: GRPC}, tls=False)
            else:
                results = await comparison(bench, True, args.workers, not args.gateway_only)
    if args.repeat:
        report_repeats(args, runs, bench.providers)
        return
    ort = in_process(artifact, rows, args.seconds, args.execution_provider)
    report(args, results, bench.providers, ort)


if __name__ == "__main__":
    asyncio.run(main())
