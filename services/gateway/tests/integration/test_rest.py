"""The gateway's KServe V2 REST API with curl, as README shows it: every endpoint, both
bodies of infer (JSON, binary tensor data), compression, and every refusal as the
protocol's JSON error with its HTTP status. (tritonclient.http runs test_serving.py's
protocol tests over the same API.)"""

from __future__ import annotations

import asyncio
import gzip
import json
import subprocess
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime
import pytest

from flywheel_common.settings import AuthSettings, Role, StaticToken
from flywheel_testing.models import IrisModels
from flywheel_testing.tls import pki

from .conftest import Platform

ROOT = Path(__file__).resolve().parents[4]


@cache
def curl_command() -> str:
    """curl, installed from Debian's package when missing."""
    found = subprocess.run(
        [ROOT / "infra" / "command.sh", "curl"], check=True, stdout=subprocess.PIPE, text=True
    )
    return found.stdout.strip()


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def curl(platform: Platform, path: str, *arguments: str, data: bytes | None = None) -> Answer:
    """`curl -i` of the gateway's REST API over HTTPS, trusting the test CA; `data` is
    sent as the request body (POST)."""
    command = [curl_command(), "-sS", "-i", "--cacert", str(pki().ca_file), *arguments]
    if data is not None:
        command += ["--data-binary", "@-"]
    command.append(f"https://{platform.address_of('http')}{path}")
    process = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    output, errors = await asyncio.wait_for(process.communicate(data), 60)
    assert process.returncode == 0, errors.decode()
    head, _, body = output.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Answer(int(status_line.split()[1]), headers, body)


def features(rows: int) -> np.ndarray:
    return np.random.default_rng(rows).uniform(0, 7, size=(rows, 4)).astype(np.float32)


def expected(iris: IrisModels, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    session = onnxruntime.InferenceSession(iris.classifier, providers=["CPUExecutionProvider"])
    label, probabilities = session.run(None, {"features": x})
    return label, probabilities


async def test_curl_reaches_every_endpoint(
    platform: Platform, iris: IrisModels, model_name: str
) -> None:
    await platform.register(model_name, iris.classifier)
    await platform.deploy(model_name, {1: 100}, generation=1)
    for path in ("/v2/health/live", "/v2/health/ready", f"/v2/models/{model_name}/ready"):
        answer = await curl(platform, path)
        assert (answer.status, answer.body) == (200, b""), path
    assert (await curl(platform, f"/v2/models/{model_name}/versions/1/ready")).status == 200
    assert (await curl(platform, f"/v2/models/{model_name}/versions/7/ready")).status == 400

    server = (await curl(platform, "/v2")).json()
    assert server["name"] == "flywheel-gateway"
    assert "binary_tensor_data" in server["extensions"]
    for path in (f"/v2/models/{model_name}", f"/v2/models/{model_name}/versions/1"):
        metadata = await curl(platform, path)
        assert metadata.headers["content-type"].startswith("application/json")
        assert metadata.json() == {
            "name": model_name,
            "versions": ["1"],
            "platform": "onnxruntime_onnx",
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 4]}],
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
            ],
            "parameters": {"execution_provider": "CPUExecutionProvider"},
        }

    x = features(3)
    label, probabilities = expected(iris, x)
    request = {
        "id": "curl-1",
        "inputs": [{"name": "features", "shape": [3, 4], "datatype": "FP32", "data": x.tolist()}],
    }
    answer = await curl(
        platform, f"/v2/models/{model_name}/infer", "-H", "Content-Type: application/json",
        "-H", "Accept-Encoding: gzip",
        data=json.dumps(request).encode(),
    )  # fmt: skip
    assert answer.status == 200, answer.body
    assert "content-encoding" not in answer.headers  # too small to gain from compression
    result = answer.json()
    assert (result["model_name"], result["model_version"], result["id"]) == (
        model_name,
        "1",
        "curl-1",
    )
    outputs = {output["name"]: output for output in result["outputs"]}
    assert outputs["label"]["data"] == label.tolist()
    assert outputs["label"]["shape"] == [3]
    np.testing.assert_allclose(outputs["probabilities"]["data"], probabilities.ravel(), rtol=1e-6)

    # The binary tensor data extension both ways, the request gzipped, the answer deflated
    # (large enough to be compressed).
    x = features(100)
    _, probabilities = expected(iris, x)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "features",
                    "shape": [100, 4],
                    "datatype": "FP32",
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
        }
    ).encode()
    answer = await curl(
        platform,
        f"/v2/models/{model_name}/versions/1/infer",
        "-H", f"Inference-Header-Content-Length: {len(header)}",
        "-H", "Content-Type: application/octet-stream",
        "-H", "Content-Encoding: gzip",
        "-H", "Accept-Encoding: deflate",
        data=gzip.compress(header + x.tobytes()),
    )  # fmt: skip
    assert answer.status == 200, answer.body
    assert answer.headers["content-encoding"] == "deflate"
    body = zlib.decompress(answer.body)
    length = int(answer.headers["inference-header-content-length"])
    [output] = json.loads(body[:length])["outputs"]
    assert output["parameters"] == {"binary_data_size": probabilities.nbytes}
    np.testing.assert_allclose(
        np.frombuffer(body[length:], np.float32).reshape(100, 3), probabilities, rtol=1e-6
    )


async def test_every_refusal_is_the_protocols_json_error(
    platform: Platform, iris: IrisModels, model_name: str
) -> None:
    await platform.register(model_name, iris.classifier)
    await platform.deploy(model_name, {1: 100}, generation=1)
    infer = f"/v2/models/{model_name}/infer"

    def inputs(shape: list[int], data: list[float]) -> bytes:
        tensor = {"name": "features", "shape": shape, "datatype": "FP32", "data": data}
        return json.dumps({"inputs": [tensor]}).encode()

    cases: list[tuple[str, list[str], bytes | None, int, str]] = [
        ("/v2/models/no-such-model/infer", [], inputs([1, 4], [1, 2, 3, 4]), 404, "not deployed"),
        ("/v2/models/no-such-model", [], None, 404, "not deployed"),
        (f"/v2/models/{model_name}/versions/9/infer", [], inputs([1, 4], [1] * 4), 404,
         "version 9 is not served"),
        (f"/v2/models/{model_name}/versions/x/infer", [], inputs([1, 4], [1] * 4), 400,
         "must be a version number"),
        (infer, [], b"{", 400, "not valid JSON"),
        (infer, [], inputs([2, 3], [1] * 6), 400, "expected shape [-1, 4], received [2, 3]"),
        (infer, [], inputs([1, 4], [1, 2, 3]), 400, "needs 4 values, received 3"),
        (infer, ["-H", "Inference-Header-Content-Length: 99999"], inputs([1, 4], [1] * 4), 400,
         "Inference-Header-Content-Length must be the length"),
        (infer, ["-X", "GET"], None, 405, "POST /v2/models/NAME[/versions/V]/infer"),
        ("/v2/nowhere", [], None, 404, "the KServe V2 endpoints are"),
    ]  # fmt: skip
    for path, arguments, data, status, fragment in cases:
        answer = await curl(platform, path, *arguments, data=data)
        assert answer.status == status, (path, answer)
        assert answer.headers["content-type"].startswith("application/json"), (path, answer)
        assert fragment in answer.json()["error"], (path, answer.json())


@pytest.mark.parametrize(
    "own_platform",
    [
        {
            "auth": AuthSettings(
                tokens={
                    "reader-token": Role.READER,
                    "other-token": StaticToken(role=Role.READER, models=["other-*"]),
                }
            )
        }
    ],
    indirect=True,
)
async def test_tokens_guard_the_rest_api_as_they_guard_grpc(
    own_platform: Platform, iris: IrisModels, model_name: str
) -> None:
    await own_platform.register(model_name, iris.classifier)
    await own_platform.deploy(model_name, {1: 100}, generation=1)
    metadata = f"/v2/models/{model_name}"
    # Probes and load balancers check health without a token.
    assert (await curl(own_platform, "/v2/health/ready")).status == 200
    missing = await curl(own_platform, metadata)
    assert missing.status == 401
    assert missing.headers["www-authenticate"] == 'Bearer realm="flywheel"'
    assert "authorization: Bearer <token>" in missing.json()["error"]
    wrong = await curl(own_platform, metadata, "-H", "Authorization: Bearer guess")
    assert wrong.status == 401
    other = await curl(own_platform, metadata, "-H", "Authorization: Bearer other-token")
    assert other.status == 403
    assert f"needs role reader on model {model_name!r}" in other.json()["error"]
    granted = await curl(own_platform, metadata, "-H", "Authorization: Bearer reader-token")
    assert granted.status == 200
    assert granted.json()["name"] == model_name
    server = await curl(own_platform, "/v2", "-H", "Authorization: Bearer other-token")
    assert server.status == 200
