"""A gateway is ready only when it can serve what is deployed; with the documented retry
policy, a client of two replicas sees no failed request while one is killed and restarted."""

from __future__ import annotations

import asyncio
import signal
from collections import Counter

import grpc

from flywheel_common.healthcheck import is_serving
from flywheel_common.service import Service
from flywheel_gateway.app import build as build_gateway
from flywheel_gateway.settings import GatewaySettings
from flywheel_testing.backends import unused_port
from flywheel_testing.clients import replicas_target, retrying_options
from flywheel_testing.models import IrisModels
from flywheel_testing.processes import service_process
from flywheel_testing.tls import grpc_settings, pki, secure_channel
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

from .conftest import Platform
from .test_gateway_state import typed_request


async def infer_code(
    stub: pb_grpc.GRPCInferenceServiceStub, request: pb.ModelInferRequest
) -> grpc.StatusCode:
    try:
        await stub.ModelInfer(request, timeout=5)
    except grpc.aio.AioRpcError as error:
        return error.code()
    return grpc.StatusCode.OK


async def test_a_starting_gateway_answers_unavailable_until_its_routes_are_warm(
    platform: Platform, iris: IrisModels, model_name: str
) -> None:
    await platform.register(model_name, iris.classifier)
    await platform.deploy(model_name, {1: 100}, generation=1)
    settings = platform.settings.model_copy(
        update={
            "grpc": grpc_settings(port=0),
            "gateway_id": f"{platform.settings.gateway_id}-b",
            "data_dir": platform.settings.data_dir / "b",  # a spool of its own
        }
    )
    second: Service = build_gateway(settings)
    starting = asyncio.create_task(second.start())
    request = typed_request(model_name, iris.features[:2])
    seen: Counter[str] = Counter()
    try:
        while not second.grpc.port:
            await asyncio.sleep(0.001)
        async with secure_channel(second.grpc.address) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while not starting.done():
                healthy = await is_serving(second.grpc.address, pki().client_tls(), timeout=1.0)
                live = await stub.ServerLive(pb.ServerLiveRequest())
                assert live.live
                code = await infer_code(stub, request)
                seen[code.name] += 1
                if code is not grpc.StatusCode.OK:
                    assert code is grpc.StatusCode.UNAVAILABLE
                    assert not healthy  # unavailable only while health says NOT_SERVING
            await starting
            assert await is_serving(second.grpc.address, pki().client_tls(), timeout=1.0)
            assert (await stub.ServerReady(pb.ServerReadyRequest())).ready
            response = await stub.ModelInfer(request, timeout=5)
    finally:
        await second.stop()
    assert response.model_version == "1"
    assert set(seen) <= {"OK", "UNAVAILABLE"}, seen


async def test_a_replica_killed_and_restarted_costs_no_request_with_the_retry_policy(
    platform: Platform, iris: IrisModels, model_name: str
) -> None:
    await platform.register(model_name, iris.classifier)
    await platform.deploy(model_name, {1: 100}, generation=1)
    ports = [unused_port(), unused_port()]

    def replica_settings(index: int) -> GatewaySettings:
        return platform.settings.model_copy(
            update={
                "grpc": grpc_settings(port=ports[index]),
                "gateway_id": f"{platform.settings.gateway_id}-{index}",
                "log_predictions": False,
            }
        )

    target = replicas_target([f"127.0.0.1:{port}" for port in ports])
    options = retrying_options()
    request = typed_request(model_name, iris.features[:2])
    outcomes: Counter[str] = Counter()
    stop = asyncio.Event()

    async def client() -> None:
        async with secure_channel(target, options=options) as channel:
            stub = pb_grpc.GRPCInferenceServiceStub(channel)
            while not stop.is_set():
                try:
                    await stub.ModelInfer(request, timeout=10)
                    outcomes["OK"] += 1
                except grpc.aio.AioRpcError as error:
                    outcomes[f"{error.code().name}: {error.details()}"] += 1
                await asyncio.sleep(0.005)

    replicas: list[asyncio.subprocess.Process] = []
    load: list[asyncio.Task[None]] = []
    try:
        for index in (0, 1):
            replicas.append(await service_process("flywheel_gateway", replica_settings(index)))
        load = [asyncio.create_task(client()) for _ in range(4)]
        await asyncio.sleep(1.0)
        replicas[0].send_signal(signal.SIGKILL)
        await replicas[0].wait()
        await asyncio.sleep(0.5)
        replicas[0] = await service_process("flywheel_gateway", replica_settings(0))
        await asyncio.sleep(1.0)
    finally:
        stop.set()
        await asyncio.gather(*load)
        for replica in replicas:
            if replica.returncode is None:
                replica.send_signal(signal.SIGTERM)
                await asyncio.wait_for(replica.wait(), 60)
    assert outcomes["OK"] > 100
    assert set(outcomes) == {"OK"}, outcomes
