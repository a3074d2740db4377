"""KServe V2 / Open Inference Protocol over gRPC: decode, call the use case, encode."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flywheel_common.errors import InvalidArgument
from flywheel_common.grpc_server import Scope, Unscoped, model_field
from flywheel_common.settings import Role
from flywheel_common.signatures import TensorSpec
from flywheel_gateway.handlers import SERVER_NAME, SERVER_VERSION, Inference, InferRequest
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


def _tensor_metadata(spec: TensorSpec) -> pb.ModelMetadataResponse.TensorMetadata:
    return pb.ModelMetadataResponse.TensorMetadata(
        name=spec.name, datatype=spec.datatype, shape=spec.shape
    )


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, inference: Inference, is_ready: Callable[[], bool]) -> None:
        self._inference = inference
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
        return pb.ModelReadyResponse(
            ready=self._inference.is_model_ready(request.name, request.version)
        )

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: Any
    ) -> pb.ModelMetadataResponse:
        described = await self._inference.describe(request.name, request.version)
        return pb.ModelMetadataResponse(
            name=described.name,
            versions=described.versions,
            platform=described.platform,
            inputs=[_tensor_metadata(spec) for spec in described.inputs],
            outputs=[_tensor_metadata(spec) for spec in described.outputs],
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
