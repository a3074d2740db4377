"""Benchmark: the gateway under tritonclient's asyncio gRPC client, with same-run references.

    make bench-gateway        # starts Kafka if needed
    uv run python bench/gateway.py --seconds 5 --concurrency 1 4 16 64 [--workers 1 2]
    uv run python bench/gateway.py --tls-only --seconds 5   # just TLS on vs off
    bench/gpu.sh              # on a machine with an NVIDIA GPU: --execution-provider cuda

An MLP trained on scikit-learn's breast-cancer data (30 features) is exported to ONNX and
registered; batch-1 ModelInfer requests come from tritonclient.grpc.aio at each concurrency.
Printed side by side, in one run:
- onnxruntime called in-process, one call at a time (the model's own cost), on the
  execution provider the gateways are given (`--execution-provider`; the CPU by default);
- a bare grpc.aio V2 server returning a fixed response over TLS (the Python gRPC ceiling);
- this gateway with batching off and on, prediction logging off and on (each log written
  to the journal before its request is answered, the journal flushed to the disk every
  second), and logging with a flush before every answer (`FSYNC_INTERVAL_MS=0`): the
  price of journaling and of its durability; all over TLS (its default; the client trusts
  the benchmark's own CA), and once more in plaintext (GRPC__TLS__ENABLED=false): TLS on
  vs off in the same run;
- MLServer serving the same ONNX file through bench/mlserver/onnx_runtime.py with its
  adaptive batching (max batch 32, like the gateway). MLServer gets its own virtualenv,
  built with uv from bench/mlserver/requirements.txt into .run/bench/mlserver on first use
  (plaintext, as MLServer serves by default).

The servers run in their own processes: tritonclient registers the same protobuf names as
Flywheel's `inference` package, so it cannot share a process with them. Each gateway's
execution provider, as its REST model metadata reports it, is printed; with
`--execution-provider cuda` a gateway that runs on anything else stops the benchmark, so no
figure is ever labelled CUDA that the CPU measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import ssl
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import onnxruntime
import tritonclient.grpc.aio as triton_aio
from harness import reference_venv, register, start, stop
from sklearn.datasets import load_breast_cancer
from sklearn.neural_network import MLPClassifier
from sklearn.preprocessing import StandardScaler
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


def mlp_model() -> tuple[bytes, np.ndarray]:
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
        json.dumps({**settings, "debug": False, "parallel_workers": workers})
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


async def throughput(
    address: str, model: str, rows: np.ndarray, concurrency: int, seconds: float, ca_file: str
) -> float:
    """Completed batch-1 requests per second over `seconds`, after a short warm-up."""
    client = triton_client(address, ca_file)
    deadline = 0.0
    done = 0

    async def worker(offset: int) -> None:
        nonlocal done
        index = offset
        while time.monotonic() < deadline:
            tensor = InferInput("features", [1, rows.shape[1]], "FP32")
            tensor.set_data_from_numpy(rows[index % len(rows)][None, :])
            await client.infer(model, [tensor])
            done += 1
            index += concurrency

    deadline = time.monotonic() + 1.0
    await asyncio.gather(*(worker(i) for i in range(concurrency)))  # warm-up
    done = 0
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    elapsed = time.monotonic() - started
    await client.close()
    return done / elapsed


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


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
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
        "--execution-provider",
        choices=["auto", "cpu", "cuda"],
        help="the gateways' EXECUTION_PROVIDER and the in-process reference's provider; with "
        "cuda, a gateway that does not run on CUDA stops the benchmark",
    )
    args = parser.parse_args()
    await ensure_topics(KafkaSettings(bootstrap_servers=args.bootstrap))
    artifact, rows = mlp_model()
    model = f"mlp-{os.getpid()}"
    results: dict[str, dict[int, float]] = {}
    providers: dict[str, str] = {}
    ca_file = str(pki().ca_file)

    async def measure(label: str, address: str, tls: bool = True) -> None:
        results[label] = {
            c: await throughput(address, model, rows, c, args.seconds, ca_file if tls else "")
            for c in args.concurrency
        }

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
        await register(f"127.0.0.1:{registry_port}", model, artifact)
        await deploy(args.bootstrap, model)

        async def gateway(label: str, settings: dict[str, str], tls: bool = True) -> None:
            port, http_port = unused_port(), unused_port()
            chosen = args.execution_provider
            env = {
                "FLYWHEEL_GATEWAY_GRPC__PORT": str(port),
                "FLYWHEEL_GATEWAY_HTTP__PORT": str(http_port),
                **({"FLYWHEEL_GATEWAY_EXECUTION_PROVIDER": chosen} if chosen else {}),
                "FLYWHEEL_GATEWAY_DATA_DIR": f"{folder}/gateway-{port}",
                "FLYWHEEL_GATEWAY_TELEMETRY__METRICS_PORT": "-1",
                "FLYWHEEL_GATEWAY_TELEMETRY__LOG_LEVEL": "WARNING",
                "FLYWHEEL_GATEWAY_KAFKA__BOOTSTRAP_SERVERS": args.bootstrap,
                "FLYWHEEL_GATEWAY_AUTH__ALLOW_ANONYMOUS": "true",
                "FLYWHEEL_GATEWAY_REGISTRY_ADDRESS": f"127.0.0.1:{registry_port}",
                **tls_environment("FLYWHEEL_GATEWAY_"),
                **(
                    settings if tls else settings | {"FLYWHEEL_GATEWAY_GRPC__TLS__ENABLED": "false"}
                ),
            }
            client_tls = pki().client_tls() if tls else ClientTlsSettings(enabled=False)
            process = await start([sys.executable, "-m", "flywheel_gateway"], env, port, client_tls)
            workers = int(settings.get("FLYWHEEL_GATEWAY_WORKERS", "1"))
            for _ in range(8 * workers if workers > 1 else 1):  # reach every worker
                await wait_model_ready(f"127.0.0.1:{port}", model, ca_file if tls else "")
            providers[label] = await asyncio.to_thread(
                execution_provider, http_port, model, ca_file if tls else ""
            )
            if chosen == "cuda" and providers[label] != CUDA:
                await stop(process)
                await stop(registry)
                raise SystemExit(
                    f"{label}: the gateway runs on {providers[label]}, not CUDA; its warning "
                    "'CUDA wanted but not used' says why"
                )
            await measure(label, f"127.0.0.1:{port}", tls)
            await stop(process)

        def batching(size: str, logging_on: str, fsync_interval_ms: str = "1000") -> dict[str, str]:
            return {
                "FLYWHEEL_GATEWAY_MAX_BATCH_SIZE": size,
                "FLYWHEEL_GATEWAY_LOG_PREDICTIONS": logging_on,
                "FLYWHEEL_GATEWAY_PREDICTION_JOURNAL_FSYNC_INTERVAL_MS": fsync_interval_ms,
            }

        if args.tls_only:
            await gateway(TLS_ON, batching("32", "true"))
            await gateway(TLS_OFF, batching("32", "true"), tls=False)
            await stop(registry)
            report(
                args,
                results,
                providers,
                in_process(artifact, rows, args.seconds, args.execution_provider),
            )
            return

        bare_port = unused_port()
        server = pki().server_tls()
        bare = await start(
            [
                sys.executable,
                str(HERE / "bare_v2_server.py"),
                str(bare_port),
                str(server.cert_file),
                str(server.key_file),
            ],
            {},
            bare_port,
        )
        await measure(BARE, f"127.0.0.1:{bare_port}")
        await stop(bare)

        await gateway("gateway, batching off, logging off", batching("1", "false"))
        await gateway("gateway, batching off, logging on", batching("1", "true"))
        await gateway("gateway, batching on, logging off", batching("32", "false"))
        await gateway(TLS_ON, batching("32", "true"))
        await gateway(FSYNC, batching("32", "true", fsync_interval_ms="0"))
        await gateway(TLS_OFF, batching("32", "true"), tls=False)
        for workers in [w for w in args.workers if w > 1]:
            await gateway(
                f"gateway, {workers} workers, batching+logging",
                {"FLYWHEEL_GATEWAY_WORKERS": str(workers)},
            )
        await stop(registry)

        for workers in sorted({1, *args.workers}) if not args.gateway_only else []:
            ports = {"grpc": unused_port(), "http": unused_port(), "metrics": unused_port()}
            repository = mlserver_repository(Path(folder), model, artifact, ports, workers)
            mlserver = await asyncio.create_subprocess_exec(
                str(mlserver_executable()),
                "start",
                str(repository),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL,
            )
            address = f"127.0.0.1:{ports['grpc']}"
            await wait_model_ready(address, model, "")
            label = (
                "MLServer 1.7.1, adaptive batching"
                if workers == 1
                else f"MLServer 1.7.1, {workers} parallel workers"
            )
            await measure(label, address, tls=False)
            await stop(mlserver)

    report(
        args, results, providers, in_process(artifact, rows, args.seconds, args.execution_provider)
    )


BARE = "bare grpc.aio, TLS (fixed reply)"
TLS_ON = "gateway, batching on, logging on"
TLS_OFF = "the same, plaintext (TLS off)"
FSYNC = "gateway, batching on, logging+fsync"


def report(
    args: argparse.Namespace,
    results: dict[str, dict[int, float]],
    providers: dict[str, str],
    ort: float,
) -> None:
    print(
        f"\ngateway: batch-1 ModelInfer from tritonclient.grpc.aio, {args.seconds:.0f}s per cell, "
        "MLP 30-64-32-2 on breast cancer; requests/s (TLS unless the row says otherwise)"
    )
    reference = CUDA if args.execution_provider == "cuda" else CPU
    print(f"onnxruntime in-process, one call at a time, {reference}: {ort:,.0f}/s")
    print(
        "gateways' execution provider (REST model metadata): "
        + ", ".join(sorted(set(providers.values())))
    )
    header = "".join(f"{'c=' + str(c):>10}" for c in args.concurrency)
    print(f"{'server':<38}{header}")
    for label, row in results.items():
        print(f"{label:<38}" + "".join(f"{row[c]:>10,.0f}" for c in args.concurrency))
    top = max(args.concurrency)
    best = results[TLS_ON][top]
    plain = results[TLS_OFF][top]
    print(f"\nat c={top}: gateway over TLS / in plaintext = {best / plain:.2f}")
    if args.tls_only:
        return
    bare = results[BARE][top]
    quiet = results["gateway, batching on, logging off"][top]
    synced = results[FSYNC][top]
    print(
        f"at c={top}: gateway (batching, logging) / bare server = {best / bare:.2f} "
        f"(target >= 0.80); logging cost = {1 - best / quiet:.1%} (target < 10%); "
        f"fsync before every answer costs {1 - synced / best:.1%} more"
    )
    if args.gateway_only:
        return
    mlserver_best = results["MLServer 1.7.1, adaptive batching"][top]
    print(
        f"at c={top}: gateway (batching, logging) / MLServer (plaintext) = "
        f"{best / mlserver_best:.2f} (target >= 2.0)"
    )
    for workers in [w for w in args.workers if w > 1]:
        ours = results[f"gateway, {workers} workers, batching+logging"][top]
        theirs = results[f"MLServer 1.7.1, {workers} parallel workers"][top]
        print(
            f"at c={top}, {workers} workers: gateway / its 1-worker self = {ours / best:.2f}; "
            f"/ MLServer with {workers} parallel workers = {ours / theirs:.2f}"
        )


if __name__ == "__main__":
    asyncio.run(main())
