"""The Python gRPC ceiling: a grpc.aio V2 server whose ModelInfer returns a fixed response.

Used by bench/gateway.py as the reference no Python V2 server can beat, and by
bench/served_call.py, with `--before-answer` and `--spine`, to price what a served call adds
to it. Usage:
    python bench/bare_v2_server.py PORT [CERT_FILE KEY_FILE]
        [--before-answer {nothing,future,loop_run,thread_run} --model ONNX_FILE] [--spine]
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import onnxruntime
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

FIXED = pb.ModelInferResponse(
    model_name="mlp",
    model_version="1",
    outputs=[
        pb.ModelInferResponse.InferOutputTensor(name="label", datatype="INT64", shape=[1]),
        pb.ModelInferResponse.InferOutputTensor(
            name="probabilities", datatype="FP32", shape=[1, 2]
        ),
    ],
    raw_output_contents=[np.zeros(1, np.int64).tobytes(), np.zeros((1, 2), np.float32).tobytes()],
)

BeforeAnswer = Callable[[pb.ModelInferRequest], Awaitable[None]]


async def nothing(request: pb.ModelInferRequest) -> None:
    return None


async def future(request: pb.ModelInferRequest) -> None:
    """Suspends the call until the loop's next turn, as a request waiting for its batch."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done


def model_run(model: Path, in_thread: bool) -> BeforeAnswer:
    """Runs the request's row through the ONNX model, on the event loop or in a thread."""
    session = onnxruntime.InferenceSession(model.read_bytes(), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run(request: pb.ModelInferRequest) -> None:
        row = np.frombuffer(request.raw_input_contents[0], np.float32).reshape(1, -1)
        session.run(None, {name: row})

    async def on_loop(request: pb.ModelInferRequest) -> None:
        run(request)

    if not in_thread:
        return on_loop
    executor = ThreadPoolExecutor(2)

    async def in_a_thread(request: pb.ModelInferRequest) -> None:
        await asyncio.get_running_loop().run_in_executor(executor, run, request)

    return in_a_thread


def before_answer(choice: str, model: Path | None) -> BeforeAnswer:
    """What `--before-answer` names; the model runs need `--model`."""
    if choice in ("loop_run", "thread_run"):
        if model is None:
            raise SystemExit(f"--before-answer {choice} needs --model ONNX_FILE")
        return model_run(model, in_thread=choice == "thread_run")
    return future if choice == "future" else nothing


class FixedServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, before_answer: BeforeAnswer = nothing) -> None:
        self._before_answer = before_answer

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=True)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        await self._before_answer(request)
        response = pb.ModelInferResponse()
        response.CopyFrom(FIXED)
        response.id = request.id
        return response


async def main(port: int, credentials: grpc.ServerCredentials | None, servicer: Any) -> None:
    """Plaintext, or TLS with `credentials`."""
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, server)
    health = HealthServicer()  # so the benchmark waits for it like for every Flywheel server
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    await health.set("", health_pb2.HealthCheckResponse.SERVING)
    address = f"127.0.0.1:{port}"
    if credentials is not None:
        server.add_secure_port(address, credentials)
    else:
        server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


async def behind_the_spine(port: int, servicer: Any) -> None:
    """The servicer behind Flywheel's own gRPC server, as the gateway serves (plaintext,
    anonymous callers): its interceptor, server span, RPC metrics and error mapping."""
    from flywheel_common.grpc_server import GrpcServer, ServiceBinding
    from flywheel_common.identities import Authenticator
    from flywheel_common.settings import (
        AuthSettings,
        GrpcSettings,
        ServerTlsSettings,
        TelemetrySettings,
    )
    from flywheel_common.telemetry import configure_telemetry
    from flywheel_gateway.grpc_api import METHOD_ROLES, METHOD_SCOPES, SERVICE_NAME

    configure_telemetry("bare-v2-server", "bench", TelemetrySettings(metrics_port=-1))
    binding = ServiceBinding(
        SERVICE_NAME,
        pb_grpc.add_GRPCInferenceServiceServicer_to_server,
        servicer,
        METHOD_ROLES,
        METHOD_SCOPES,
    )
    server = GrpcServer(
        GrpcSettings(port=port, tls=ServerTlsSettings(enabled=False)),
        [binding],
        Authenticator(AuthSettings(allow_anonymous=True)),
    )
    await server.start()
    await server.set_serving(True)
    await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("port", type=int)
    parser.add_argument("tls", nargs="*", help="CERT_FILE KEY_FILE: serve TLS")
    parser.add_argument(
        "--before-answer",
        choices=["nothing", "future", "loop_run", "thread_run"],
        default="nothing",
    )
    parser.add_argument("--model", type=Path, help="the ONNX file of loop_run and thread_run")
    parser.add_argument("--spine", action="store_true", help="behind Flywheel's gRPC server")
    args = parser.parse_args()
    fixed = FixedServicer(before_answer(args.before_answer, args.model))
    if args.spine:
        asyncio.run(behind_the_spine(args.port, fixed))
    else:
        tls = None
        if args.tls:
            cert_file, key_file = args.tls
            tls = grpc.ssl_server_credentials(
                [(Path(key_file).read_bytes(), Path(cert_file).read_bytes())]
            )
        asyncio.run(main(args.port, tls, fixed))
