"""The KServe V2 REST bodies: JSON tensors and the binary tensor data extension."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from flywheel_common.errors import InvalidArgument
from flywheel_gateway.handlers import InferResult, OutputTensor
from flywheel_gateway.rest_codec import HEADER_LENGTH, OutputForm, infer_request, infer_response
from flywheel_gateway.tensors import encode_bytes, to_array


def body(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def test_json_inputs_nested_or_flat_become_the_arrays_they_describe() -> None:
    document = {
        "id": "r-1",
        "parameters": {"flywheel-routing-key": "user-7"},
        "inputs": [
            {"name": "a", "shape": [2, 3], "datatype": "FP32", "data": [[1, 2, 3], [4, 5.5, 6]]},
            {"name": "b", "shape": [3], "datatype": "INT64", "data": [7, 8, 9]},
            {"name": "c", "shape": [2], "datatype": "BOOL", "data": [True, False]},
            {"name": "d", "shape": [2], "datatype": "BYTES", "data": ["héllo", ""]},
        ],
        "outputs": [{"name": "label"}],
    }
    request, form = infer_request("iris", "2", body(document), None)
    assert (request.model, request.version, request.request_id) == ("iris", "2", "r-1")
    assert request.parameters == {"flywheel-routing-key": "user-7"}
    assert request.requested_outputs == ["label"]
    arrays = {tensor.name: to_array(tensor) for tensor in request.inputs}
    np.testing.assert_array_equal(arrays["a"], np.array([[1, 2, 3], [4, 5.5, 6]], np.float32))
    assert arrays["a"].dtype == np.float32
    np.testing.assert_array_equal(arrays["b"], np.array([7, 8, 9], np.int64))
    assert arrays["c"].tolist() == [True, False]
    assert arrays["d"].tolist() == ["héllo".encode(), b""]
    assert form == OutputForm()


def test_binary_inputs_follow_the_json_in_input_order() -> None:
    first = np.arange(6, dtype=np.float32).reshape(2, 3)
    strings = np.array([b"ab", b"\xff"], dtype=object)
    document = body(
        {
            "inputs": [
                {
                    "name": "x",
                    "shape": [2, 3],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": first.nbytes},
                },
                {"name": "y", "shape": [1], "datatype": "INT32", "data": [5]},
                {
                    "name": "s",
                    "shape": [2],
                    "datatype": "BYTES",
                    "parameters": {"binary_data_size": len(encode_bytes(strings))},
                },
            ],
            "parameters": {"binary_data_output": True},
        }
    )
    whole = document + first.tobytes() + encode_bytes(strings)
    request, form = infer_request("m", "", whole, str(len(document)))
    arrays = {tensor.name: to_array(tensor) for tensor in request.inputs}
    np.testing.assert_array_equal(arrays["x"], first)
    assert arrays["y"].tolist() == [5]
    assert arrays["s"].tolist() == [b"ab", b"\xff"]
    assert form.is_binary("anything")
    assert "binary_data_output" not in request.parameters


@pytest.mark.parametrize(
    ("raw", "header", "fragment"),
    [
        (b"{not json", None, "not valid JSON"),
        (b"[1, 2]", None, "must be a JSON object"),
        (body({"inputs": []}), None, "has no inputs"),
        (body({"outputs": []}), None, "needs 'inputs' as a JSON array"),
        (body({"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}), None, "a 'name'"),
        (
            body({"inputs": [{"name": "x", "shape": [1], "datatype": "FP8", "data": [1]}]}),
            None,
            'datatype "FP8" is not supported',
        ),
        (
            body({"inputs": [{"name": "x", "shape": ["2"], "datatype": "FP32", "data": [1]}]}),
            None,
            "a JSON array of whole numbers",
        ),
        (
            body({"inputs": [{"name": "x", "shape": [1], "datatype": "FP32"}]}),
            None,
            "needs 'data' as a JSON array, or a binary_data_size",
        ),
        (
            body({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": ["1", 2]}]}),
            None,
            "FP32 data must be JSON numbers",
        ),
        (
            body({"inputs": [{"name": "x", "shape": [1], "datatype": "BYTES", "data": [1]}]}),
            None,
            "BYTES data must be JSON strings",
        ),
        (
            body({"inputs": [{"name": "x", "shape": [1], "datatype": "BOOL", "data": [1]}]}),
            None,
            "BOOL data must be true or false",
        ),
        (
            body(
                {
                    "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
                    "parameters": {"key": [1]},
                }
            ),
            None,
            "parameter 'key' of the request must be a string, number or boolean",
        ),
        (
            body(
                {
                    "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}],
                    "outputs": [{"name": "y", "parameters": {"binary_data": "yes"}}],
                }
            ),
            None,
            "binary_data must be true or false",
        ),
        (body({"inputs": [], "id": 7}), "10000", "must be the length in bytes of the JSON"),
        (body({"inputs": [], "id": 7}), "-1", "must be the length in bytes of the JSON"),
    ],
)
def test_a_malformed_request_says_what_to_fix(
    raw: bytes, header: str | None, fragment: str
) -> None:
    with pytest.raises(InvalidArgument, match=None) as refused:
        infer_request("m", "", raw, header)
    assert fragment in refused.value.message


def test_binary_sizes_must_match_the_bytes_after_the_json() -> None:
    def request(size: int, extra: bytes) -> tuple[bytes, str]:
        document = body(
            {
                "inputs": [
                    {
                        "name": "x",
                        "shape": [1],
                        "datatype": "FP32",
                        "parameters": {"binary_data_size": size},
                    }
                ]
            }
        )
        return document + extra, str(len(document))

    with pytest.raises(InvalidArgument) as past:
        infer_request("m", "", *request(8, b"\0" * 4))
    assert "binary_data_size 8 runs past the binary data after the JSON (4 bytes left)" in (
        past.value.message
    )
    with pytest.raises(InvalidArgument) as beyond:
        infer_request("m", "", *request(4, b"\0" * 6))
    assert "2 bytes of binary data follow the JSON beyond" in beyond.value.message


def result() -> InferResult:
    labels = np.array([2, 0], np.int64)
    probabilities = np.array([[0.1, 0.2, 0.7], [0.8, 0.1, 0.1]], np.float32)
    return InferResult(
        model="iris",
        version=3,
        request_id="r-9",
        outputs=[
            OutputTensor("label", "INT64", (2,), labels.tobytes()),
            OutputTensor("probabilities", "FP32", (2, 3), probabilities.tobytes()),
            OutputTensor("names", "BYTES", (2,), encode_bytes(np.array(["setosa", "é"]))),
        ],
    )


def test_outputs_are_json_values_unless_asked_for_in_binary() -> None:
    encoded = infer_response(result(), OutputForm())
    assert encoded.content_type == "application/json"
    assert HEADER_LENGTH not in encoded.headers
    answer = json.loads(encoded.body)
    assert (answer["model_name"], answer["model_version"], answer["id"]) == ("iris", "3", "r-9")
    by_name = {output["name"]: output for output in answer["outputs"]}
    assert by_name["label"] == {"name": "label", "datatype": "INT64", "shape": [2], "data": [2, 0]}
    np.testing.assert_allclose(by_name["probabilities"]["data"], [0.1, 0.2, 0.7, 0.8, 0.1, 0.1])
    assert by_name["probabilities"]["shape"] == [2, 3]
    assert by_name["names"]["data"] == ["setosa", "é"]


def test_binary_outputs_follow_the_json_header_in_output_order() -> None:
    form = OutputForm(binary_by_default=True, binary=(("names", False),))
    encoded = infer_response(result(), form)
    assert encoded.content_type == "application/octet-stream"
    length = int(encoded.headers[HEADER_LENGTH])
    answer = json.loads(encoded.body[:length])
    rest = encoded.body[length:]
    sizes = {
        output["name"]: output["parameters"]["binary_data_size"]
        for output in answer["outputs"]
        if "parameters" in output
    }
    assert sizes == {"label": 16, "probabilities": 24}
    assert np.frombuffer(rest[:16], np.int64).tolist() == [2, 0]
    np.testing.assert_allclose(
        np.frombuffer(rest[16:], np.float32), [0.1, 0.2, 0.7, 0.8, 0.1, 0.1], rtol=1e-6
    )
    assert len(rest) == 40
    assert answer["outputs"][2]["data"] == ["setosa", "é"]


def test_bytes_that_are_not_text_must_be_asked_for_in_binary() -> None:
    binary = InferResult(
        "m", 1, "", [OutputTensor("blob", "BYTES", (1,), encode_bytes(np.array([b"\xff"])))]
    )
    with pytest.raises(InvalidArgument) as refused:
        infer_response(binary, OutputForm())
    assert 'ask for it with "parameters": {"binary_data": true}' in refused.value.message
    assert infer_response(binary, OutputForm(binary_by_default=True)).body.endswith(b"\xff")
