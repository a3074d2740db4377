"""KServe V2 / Open Inference Protocol over gRPC: decode, call the use case, encode."""

from __future__ import annotations

from typing import Any

from flywheel_common.errors import InvalidArgument, Unavailable
from flywheel_common.grpc_server import Scope, Unscoped, model_field
from flywheel_common.settings import Role
from flywheel_gateway.handlers import Inference, InferRequest
from flywheel_gateway.models import ModelManager
from flywheel_gateway.tensors import RequestTensor
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

SERVICE_NAME = "inference.GRPCInferenceService"
# Inference is a read: the reader role on the model the request names.
METHOD_ROLES: dict[str, Role] = {"ModelInfer": Role.READER}
METHOD_SCOPES: dict[str, Scope] = {
    "ServerLive": Unscoped.SERVER,
    "ServerReady": Unscoped.SERVER,
    "ServerMetadata": Unscoped.SERVER,
    "ModelReady": model_field("name"),
    "ModelMetadata": model_field("name"),
    "ModelInfer": model_field("model_name"),
}
SERVER_NAME = "flywheel-gateway"
SERVER_VERSION = "0.1.0"

# Which typed `contents` field carries each datatype.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def _parameter(value: pb.InferParameter) -> object:
    kind = value.WhichOneof("parameter_choice")
    return getattr(value, kind) if kind else None


def _request(request: pb.ModelInferRequest) -> InferRequest:
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidArgument(
            f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; "
            "send one per input, in order, or use typed contents"
        )
    tensors = []
    for index, tensor in enumerate(request.inputs):
        shape = tuple(int(dim) for dim in tensor.shape)
        if raw:
            tensors.append(RequestTensor(tensor.name, tensor.datatype, shape, raw=raw[index]))
            continue
        field = _CONTENTS_FIELD.get(tensor.datatype)
        if field is None:
            raise InvalidArgument(
                f"input {tensor.name!r}: {tensor.datatype} has no typed contents; send it in "
                "raw_input_contents"
            )
        tensors.append(
            RequestTensor(
                tensor.name, tensor.datatype, shape, values=list(getattr(tensor.contents, field))
            )
        )
    return InferRequest(
        model=request.model_name,
        version=request.model_version,
        request_id=request.id,
        inputs=tensors,
        requested_outputs=[output.name for output in request.outputs],
        parameters={name: _parameter(value) for name, value in request.parameters.items()},
    )


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, inference: Inference, models: ModelManager, is_ready: Any) -> None:
        self._inference = inference
        self._models = models
        self._is_ready = is_ready

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: Any
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: Any
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=bool(self._is_ready()))

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: Any
    ) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=[])

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: Any
    ) -> pb.ModelReadyResponse:
        try:
            version = self._inference.serving_version(request.name, request.version)
        except Unavailable:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=self._models.is_ready(request.name, version))

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        version = self._inference.serving_version(request.name, request.version)
        async with self._models.use(request.name, version) as loaded:
            return pb.ModelMetadataResponse(
                name=request.name,
                versions=[str(v) for v in self._models.ready_versions(request.name)],
                platform="onnxruntime_onnx",
                inputs=[
                    pb.ModelMetadataResponse.TensorMetadata(
                        name=spec.name, datatype=spec.datatype, shape=spec.shape
                    )
                    for spec in loaded.signature.inputs
                ],
                outputs=[
                    pb.ModelMetadataResponse.TensorMetadata(
                        name=spec.name, datatype=spec.datatype, shape=spec.shape
                    )
                    for spec in loaded.signature.outputs
                ],
            )

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: Any
    ) -> pb.ModelInferResponse:
        result = await self._inference.infer(_request(request))
        return pb.ModelInferResponse(
            model_name=result.model,
            model_version=str(result.version),
            id=result.request_id,
            outputs=[
                pb.ModelInferResponse.InferOutputTensor(
                    name=output.name, datatype=output.datatype, shape=output.shape
                )
                for output in result.outputs
            ],
            raw_output_contents=[output.raw for output in result.outputs],
        )
