"""The Python gRPC ceiling: a grpc.aio V2 server whose ModelInfer returns a fixed response.

Used by bench/gateway.py as the reference no Python V2 server can beat. Usage:
    python bench/bare_v2_server.py PORT
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import grpc
import numpy as np
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


class FixedServicer(pb_grpc.GRPCInferenceServiceServicer):
    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=True)

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        response = pb.ModelInferResponse()
        response.CopyFrom(FIXED)
        response.id = request.id
        return response


async def main(port: int, credentials: grpc.ServerCredentials | None) -> None:
    """Plaintext, or TLS with `credentials`."""
    server = grpc.aio.server()
    pb_grpc.add_GRPCInferenceServiceServicer_to_server(FixedServicer(), server)
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


if __name__ == "__main__":
    # bare_v2_server.py PORT [CERT_FILE KEY_FILE]
    tls = None
    if len(sys.argv) == 4:
        pair = (Path(sys.argv[3]).read_bytes(), Path(sys.argv[2]).read_bytes())
        tls = grpc.ssl_server_credentials([pair])
    asyncio.run(main(int(sys.argv[1]), tls))
