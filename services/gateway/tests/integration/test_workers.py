"""A gateway with WORKERS=2: two full replicas behind one port, stopped together."""

from __future__ import annotations

import asyncio
import os
import signal
import ssl
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from flywheel_common.healthcheck import is_serving
from flywheel_common.topics import GATEWAY_STATUS
from flywheel_gateway.settings import GatewaySettings, HttpSettings
from flywheel_testing.backends import unused_port
from flywheel_testing.kafka import read_topic
from flywheel_testing.models import IrisModels
from flywheel_testing.processes import service_process
from flywheel_testing.tls import grpc_settings, pki, secure_channel
from flywheel_testing.waiting import eventually
from inference import grpc_service_pb2_grpc as pb_grpc

from .conftest import Platform
from .test_gateway_state import typed_request


def rest_input(rows: np.ndarray) -> dict[str, Any]:
    return {"name": "features", "shape": list(rows.shape), "datatype": "FP32",
            "data": rows.ravel().tolist()}  # fmt: skip


def pki_context() -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(pki().ca_file))


def workers_of(supervisor: asyncio.subprocess.Process) -> list[int]:
    children = Path(f"/proc/{supervisor.pid}/task/{supervisor.pid}/children").read_text()
    return [int(pid) for pid in children.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def start(platform: Platform, name: str) -> tuple[asyncio.subprocess.Process, str, str]:
    """A gateway of two workers; returns it, its gRPC address and its REST API's."""
    port, http_port = unused_port(), unused_port()
    settings: GatewaySettings = platform.settings.model_copy(
        update={
            "grpc": grpc_settings(port=port),
            "http": HttpSettings(port=http_port),
            "gateway_id": f"{platform.settings.gateway_id}-{name}",
            "workers": 2,
            "log_predictions": False,
        }
    )
    process = await service_process("flywheel_gateway", settings)
    return process, f"127.0.0.1:{port}", f"https://127.0.0.1:{http_port}"


async def test_two_workers_serve_one_port_as_two_replicas_and_stop_together(
    platform: Platform, iris: IrisModels, model_name: str, kafka_bootstrap: str
) -> None:
    await platform.register(model_name, iris.classifier)
    await platform.deploy(model_name, {1: 100}, generation=1)
    supervisor, address, http = await start(platform, "workers")
    gateway_id = f"{platform.settings.gateway_id}-workers"
    try:
        assert len(workers_of(supervisor)) == 2

        async def both_report() -> bool:
            records = await read_topic(kafka_bootstrap, GATEWAY_STATUS.name, at_least=0)
            keys = {r.key for r in records if r.key and r.key.startswith(gateway_id.encode())}
            return keys == {f"{gateway_id}-w0".encode(), f"{gateway_id}-w1".encode()}

        await eventually(both_report, 30)
        request = typed_request(model_name, iris.features[:2])
        for _ in range(20):  # each new connection lands on one of the workers
            async with secure_channel(address) as channel:
                response = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request)
            assert response.model_version == "1"
        # The REST API shares its port out the same way.
        body = {"inputs": [rest_input(iris.features[:2])]}
        for _ in range(20):
            async with aiohttp.ClientSession() as session:
                answer = await session.post(
                    f"{http}/v2/models/{model_name}/infer", json=body, ssl=pki_context()
                )
                assert answer.status == 200, await answer.text()
                assert (await answer.json())["model_version"] == "1"
    finally:
        supervisor.send_signal(signal.SIGTERM)
        status = await asyncio.wait_for(supervisor.wait(), 60)
    assert status == 0
    assert not await is_serving(address, pki().client_tls(), timeout=0.5)


async def test_a_worker_that_dies_takes_the_gateway_down_for_a_restart(
    platform: Platform,
) -> None:
    supervisor, address, _ = await start(platform, "dies")
    first, second = workers_of(supervisor)
    try:
        await asyncio.create_subprocess_exec("kill", "-9", str(first))
        status = await asyncio.wait_for(supervisor.wait(), 60)
    finally:
        if supervisor.returncode is None:
            supervisor.kill()
    assert status == 1  # the pod restarts whole, not half-served
    assert not alive(second)  # the surviving worker was stopped and reaped
    assert not await is_serving(address, pki().client_tls(), timeout=0.5)
