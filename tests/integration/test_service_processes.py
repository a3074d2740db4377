"""Every service runs as `python -m flywheel_<name>`: health, metrics, clean SIGTERM that
lets calls in flight finish."""

import asyncio
import hashlib
import os
import signal
import sys
import urllib.request
from pathlib import Path

import grpc
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from flywheel.registry.v1 import registry_pb2 as registry_pb
from flywheel.registry.v1 import registry_pb2_grpc as registry_grpc
from flywheel_common.healthcheck import is_serving, wait_until_serving
from flywheel_common.registration import registration
from flywheel_common.settings import ClientTlsSettings
from flywheel_testing.backends import unused_port
from flywheel_testing.tls import pki, secure_channel, tls_environment

SERVICES = ["registry", "deployer", "gateway", "drift", "retrain"]


async def test_every_service_serves_health_and_exits_cleanly_on_sigterm(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The five at once, as a machine starts them (and in a fifth of the time)."""
    await asyncio.gather(
        *(
            _serves_health_and_exits_cleanly(name, kafka_bootstrap, tmp_path / name)
            for name in SERVICES
        )
    )


async def _serves_health_and_exits_cleanly(name: str, kafka_bootstrap: str, data_dir: Path) -> None:
    prefix = f"FLYWHEEL_{name.upper()}_"
    port, metrics_port = unused_port(), unused_port()
    env = os.environ | {
        f"{prefix}TELEMETRY__METRICS_PORT": str(metrics_port),
        f"{prefix}GRPC__PORT": str(port),
        f"{prefix}REPORT__PORT": "0",  # the drift's reports; other services have none
        f"{prefix}HTTP__PORT": "0",  # the gateway's REST API
        f"{prefix}KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        f"{prefix}DATA_DIR": str(data_dir),
        f"{prefix}AUTH__ALLOW_ANONYMOUS": "true",
        **tls_environment(prefix),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"flywheel_{name}", env=env, stderr=asyncio.subprocess.PIPE
    )
    address = f"127.0.0.1:{port}"
    # Drain stderr all along: a full pipe would block the service's logging.
    assert process.stderr is not None
    stderr_reader = asyncio.create_task(process.stderr.read())
    try:
        down = await wait_until_serving([address], pki().client_tls(), timeout=90)
        assert not down, f"flywheel_{name} did not report SERVING"
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        scrape = await asyncio.to_thread(
            lambda: urllib.request.urlopen(metrics_url, timeout=5).read()
        )
        assert f'service_name="flywheel-{name}"'.encode() in scrape, name
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
        stderr = await stderr_reader
    assert process.returncode == 0, f"flywheel_{name}: {stderr.decode()[-2000:]}"
    assert b'"service stopped"' in stderr, name
    assert not await is_serving(address, pki().client_tls(), timeout=0.5), name


def large_model(megabytes: int) -> bytes:
    """A valid ONNX model (one MatMul) whose weights make it `megabytes` large."""
    rows = 256
    weights = np.zeros((rows, megabytes * 1024 * 1024 // (4 * rows)), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, weights.shape[1]])],
        [numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return bytes(model.SerializeToString())


async def test_sigterm_lets_an_in_flight_download_finish_and_refuses_new_calls(
    kafka_bootstrap: str, free_port: int, tmp_path: Path
) -> None:
    artifact = large_model(32)
    env = os.environ | {
        "FLYWHEEL_REGISTRY_TELEMETRY__METRICS_PORT": "-1",
        "FLYWHEEL_REGISTRY_GRPC__PORT": str(free_port),
        "FLYWHEEL_REGISTRY_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FLYWHEEL_REGISTRY_DATA_DIR": str(tmp_path),
        "FLYWHEEL_REGISTRY_AUTH__ALLOW_ANONYMOUS": "true",
        **tls_environment("FLYWHEEL_REGISTRY_"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flywheel_registry", env=env, stderr=asyncio.subprocess.PIPE
    )
    address = f"127.0.0.1:{free_port}"
    assert process.stderr is not None
    stderr_reader = asyncio.create_task(process.stderr.read())
    stop_sent = False
    try:
        assert not await wait_until_serving([address], pki().client_tls(), timeout=60)
        async with secure_channel(address) as channel:
            stub = registry_grpc.RegistryServiceStub(channel)
            await stub.RegisterModelVersion(iter(registration("big", artifact, chunk=1 << 20)))
            download = stub.GetArtifact(registry_pb.GetArtifactRequest(model="big", version=1))
            received = [await download.read()]  # the call is in flight...
            process.send_signal(signal.SIGTERM)  # ...when the service is told to stop
            stop_sent = True
            await asyncio.sleep(1.0)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.GetModel(registry_pb.GetModelRequest(name="big"), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            while (message := await download.read()) is not grpc.aio.EOF:
                received.append(message)
        data = b"".join(message.chunk for message in received)
        assert data == artifact
        assert received[0].artifact.sha256 == hashlib.sha256(artifact).hexdigest()
    finally:
        # A second SIGTERM would race the interpreter's exit, after the service has given
        # its signal handlers back, and kill it: send one only if the test never did.
        if not stop_sent:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
        stderr = await stderr_reader
    assert process.returncode == 0, stderr.decode()[-2000:]


async def test_a_service_without_tls_settings_refuses_to_start_and_names_the_variables(
    tmp_path: Path,
) -> None:
    await asyncio.gather(*(_refuses_without_tls(name, tmp_path / name) for name in SERVICES))


async def _refuses_without_tls(name: str, data_dir: Path) -> None:
    prefix = f"FLYWHEEL_{name.upper()}_"
    port = unused_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLYWHEEL_")} | {
        f"{prefix}TELEMETRY__METRICS_PORT": "-1",
        f"{prefix}GRPC__PORT": str(port),
        f"{prefix}DATA_DIR": str(data_dir),
        f"{prefix}AUTH__ALLOW_ANONYMOUS": "true",  # TLS is what this test is about
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"flywheel_{name}", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 90)
    assert process.returncode != 0, name
    message = stderr.decode()
    for variable in ("GRPC__TLS__CERT_FILE", "GRPC__TLS__KEY_FILE", "GRPC__TLS__ENABLED=false"):
        assert f"{prefix}{variable}" in message, message[-2000:]
    assert not await is_serving(f"127.0.0.1:{port}", ClientTlsSettings(enabled=False), 0.5)


async def test_plaintext_chosen_explicitly_serves_plaintext_and_refuses_tls_clients(
    kafka_bootstrap: str, free_port: int, tmp_path: Path
) -> None:
    env = os.environ | {
        "FLYWHEEL_REGISTRY_TELEMETRY__METRICS_PORT": "-1",
        "FLYWHEEL_REGISTRY_GRPC__PORT": str(free_port),
        "FLYWHEEL_REGISTRY_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        "FLYWHEEL_REGISTRY_DATA_DIR": str(tmp_path),
        "FLYWHEEL_REGISTRY_GRPC__TLS__ENABLED": "false",
        "FLYWHEEL_REGISTRY_AUTH__ALLOW_ANONYMOUS": "true",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flywheel_registry", env=env, stderr=asyncio.subprocess.PIPE
    )
    address = f"127.0.0.1:{free_port}"
    try:
        plaintext = ClientTlsSettings(enabled=False)
        assert not await wait_until_serving([address], plaintext, timeout=60)
        assert not await is_serving(address, pki().client_tls(), timeout=1.0)
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert b"PLAINTEXT" in stderr
