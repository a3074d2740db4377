"""KServe V2 / Open Inference Protocol over HTTP: JSON bodies, with the binary tensor data
extension, to and from the use case's requests and results.

A request body is one JSON object, or, when the `Inference-Header-Content-Length` header
says how long the JSON part is, that JSON followed by the raw bytes of the inputs that
declare a `binary_data_size` parameter, in input order (the layout of `raw_input_contents`
over gRPC). An output is answered as JSON values unless the request asks for it in binary
(its `binary_data` parameter, or the request's `binary_data_output` for every output
without one); the answer then carries the header and the outputs' bytes after the JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from flywheel_common.errors import InvalidArgument
from flywheel_common.signatures import NUMPY_DTYPES, TensorSpec
from flywheel_gateway.handlers import InferRequest, InferResult, ModelDescription, OutputTensor
from flywheel_gateway.tensors import RequestTensor, bytes_elements

HEADER_LENGTH = "Inference-Header-Content-Length"
JSON_TYPE = "application/json"
BINARY_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class OutputForm:
    """How the request wants its outputs: which in binary."""

    binary_by_default: bool = False
    binary: tuple[tuple[str, bool], ...] = ()

    def is_binary(self, name: str) -> bool:
        return dict(self.binary).get(name, self.binary_by_default)


@dataclass(frozen=True)
class Encoded:
    """An answer's body and the headers that describe it."""

    body: bytes
    content_type: str
    headers: dict[str, str]


def infer_request(
    model: str, version: str, body: bytes, header_length: str | None
) -> tuple[InferRequest, OutputForm]:
    """The request a body carries and how it wants its outputs; InvalidArgument saying
    what to fix when the body does not follow the protocol."""
    binary = b""
    if header_length is not None:
        length = _header_length(header_length, len(body))
        body, binary = body[:length], body[length:]
    document = _json_object(body)
    inputs = _array(document, "inputs", required=True)
    if not inputs:
        raise InvalidArgument("the request has no inputs; send at least one in 'inputs'")
    tensors = []
    offset = 0
    for index, entry in enumerate(inputs):
        tensor, offset = _input(entry, index, binary, offset)
        tensors.append(tensor)
    if offset != len(binary):
        raise InvalidArgument(
            f"{len(binary) - offset} bytes of binary data follow the JSON beyond what the "
            "inputs' binary_data_size parameters claim; declare each binary input's size"
        )
    parameters = _parameters(document, "the request")
    requested = [_output(entry, index) for index, entry in enumerate(_array(document, "outputs"))]
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise InvalidArgument(f"'id' must be a string, got {json.dumps(request_id)}")
    form = OutputForm(
        binary_by_default=parameters.pop("binary_data_output", False) is True,
        binary=tuple((name, flag) for name, flag in requested if flag is not None),
    )
    request = InferRequest(
        model=model,
        version=version,
        request_id=request_id,
        inputs=tensors,
        requested_outputs=[name for name, _ in requested],
        parameters=parameters,
    )
    return request, form


def infer_response(result: InferResult, form: OutputForm) -> Encoded:
    outputs: list[dict[str, Any]] = []
    binaries: list[bytes] = []
    for output in result.outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": list(output.shape),
        }
        if form.is_binary(output.name):
            entry["parameters"] = {"binary_data_size": len(output.raw)}
            binaries.append(output.raw)
        else:
            entry["data"] = _values(output)
        outputs.append(entry)
    header = _dumps(
        {
            "model_name": result.model,
            "model_version": str(result.version),
            "id": result.request_id,
            "outputs": outputs,
        }
    )
    if not binaries:
        return Encoded(header, JSON_TYPE, {})
    return Encoded(b"".join([header, *binaries]), BINARY_TYPE, {HEADER_LENGTH: str(len(header))})


def model_metadata(described: ModelDescription) -> bytes:
    """The protocol's model metadata, and `parameters` beside it (the protocol defines none
    here; clients read the fields they know) with the provider the version runs on."""
    return _dumps(
        {
            "name": described.name,
            "versions": described.versions,
            "platform": described.platform,
            "inputs": [_tensor_metadata(spec) for spec in described.inputs],
            "outputs": [_tensor_metadata(spec) for spec in described.outputs],
            "parameters": {"execution_provider": described.execution_provider},
        }
    )


def server_metadata(name: str, version: str, extensions: list[str]) -> bytes:
    return _dumps({"name": name, "version": version, "extensions": extensions})


def error_body(message: str) -> bytes:
    """The protocol's error answer: a JSON object with the message under "error"."""
    return _dumps({"error": message})


def _dumps(document: dict[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def _header_length(text: str, body_length: int) -> int:
    try:
        length = int(text)
    except ValueError:
        length = -1
    if not 0 <= length <= body_length:
        raise InvalidArgument(
            f"{HEADER_LENGTH} must be the length in bytes of the JSON at the start of the "
            f"body (0 to {body_length}), got {text!r}"
        )
    return length


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidArgument(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidArgument("the request body must be a JSON object with 'inputs'")
    return document


def _array(document: dict[str, Any], key: str, required: bool = False) -> list[Any]:
    value = document.get(key, None if required else [])
    if not isinstance(value, list):
        raise InvalidArgument(f"the request needs '{key}' as a JSON array")
    return value


def _parameters(document: dict[str, Any], where: str) -> dict[str, object]:
    value = document.get("parameters", {})
    if not isinstance(value, dict):
        raise InvalidArgument(f"'parameters' of {where} must be a JSON object")
    for name, parameter in value.items():
        if not isinstance(parameter, str | int | float | bool):
            raise InvalidArgument(
                f"parameter {name!r} of {where} must be a string, number or boolean"
            )
    return dict(value)


def _input(entry: Any, index: int, binary: bytes, offset: int) -> tuple[RequestTensor, int]:
    if not isinstance(entry, dict):
        raise InvalidArgument(f"inputs[{index}] must be a JSON object")
    name = entry.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"inputs[{index}] needs a 'name'")
    where = f"input {name!r}"
    datatype = entry.get("datatype")
    if datatype not in NUMPY_DTYPES:
        raise InvalidArgument(
            f"{where}: datatype {json.dumps(datatype)} is not supported; use one of "
            + ", ".join(NUMPY_DTYPES)
        )
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(
        isinstance(dim, int) and not isinstance(dim, bool) for dim in shape
    ):
        raise InvalidArgument(f"{where} needs a 'shape': a JSON array of whole numbers")
    size = _parameters(entry, where).get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidArgument(f"{where}: binary_data_size must be a whole number of bytes")
        if offset + size > len(binary):
            raise InvalidArgument(
                f"{where}: binary_data_size {size} runs past the binary data after the JSON "
                f"({len(binary) - offset} bytes left)"
            )
        raw = binary[offset : offset + size]
        return RequestTensor(name, datatype, tuple(shape), raw=raw), offset + size
    data = entry.get("data")
    if not isinstance(data, list):
        raise InvalidArgument(
            f"{where} needs 'data' as a JSON array, or a binary_data_size parameter with its "
            "bytes after the JSON"
        )
    return RequestTensor(name, datatype, tuple(shape), values=_flat(data, datatype, where)), offset


def _flat(data: list[Any], datatype: str, where: str) -> list[object]:
    """The values of `data`, flat in row-major order (the protocol allows nested arrays)."""
    values: list[object] = data
    while any(isinstance(value, list) for value in values):
        flat: list[object] = []
        for value in values:
            if isinstance(value, list):
                flat.extend(value)
            else:
                flat.append(value)
        values = flat
    if datatype == "BYTES":
        texts = [value for value in values if isinstance(value, str)]
        if len(texts) != len(values):
            raise InvalidArgument(f"{where}: BYTES data must be JSON strings")
        return [text.encode() for text in texts]
    wanted = bool if datatype == "BOOL" else (int, float)
    if not all(isinstance(value, wanted) for value in values):
        kind = "true or false" if datatype == "BOOL" else "JSON numbers"
        raise InvalidArgument(f"{where}: {datatype} data must be {kind}")
    return values


def _output(entry: Any, index: int) -> tuple[str, bool | None]:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise InvalidArgument(f"outputs[{index}] must be a JSON object with a 'name'")
    name: str = entry["name"]
    binary = _parameters(entry, f"output {name!r}").get("binary_data")
    if binary is not None and not isinstance(binary, bool):
        raise InvalidArgument(f"output {name!r}: binary_data must be true or false")
    return name, binary


def _values(output: OutputTensor) -> list[Any]:
    if output.datatype == "BYTES":
        try:
            return [item.decode() for item in bytes_elements(output.raw, output.name)]
        except UnicodeDecodeError:
            raise InvalidArgument(
                f"output {output.name!r} holds bytes that are not UTF-8 text; ask for it "
                'with "parameters": {"binary_data": true}'
            ) from None
    values: list[Any] = np.frombuffer(output.raw, dtype=NUMPY_DTYPES[output.datatype]).tolist()
    return values
