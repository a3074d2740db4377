"""Drives the gateway with the stock tritonclient, unmodified, and prints results as JSON.

Runs in its own process: tritonclient registers the same protobuf names as Flywheel's
`inference` package. Usage: triton_driver.py ADDRESS SCENARIO JSON_ARGUMENTS CA_FILE PROTOCOL
(the CA the gateway's certificate chains to; PROTOCOL grpc or http: the same scenarios with
tritonclient.grpc against the gRPC port or tritonclient.http against the REST one).
"""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys
import time
from collections import Counter
from types import ModuleType
from typing import Any

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.grpc.aio as triton_grpc_aio
import tritonclient.http as triton_http
import tritonclient.http.aio as triton_http_aio
from geventhttpclient.response import HTTPConnectionClosed
from tritonclient.utils import InferenceServerException

PROTOCOL = sys.argv[5] if len(sys.argv) > 5 else "grpc"
triton: ModuleType = triton_http if PROTOCOL == "http" else triton_grpc


def client_of(address: str, ca_file: str, secure: bool = True) -> Any:
    """A blocking client of the protocol, trusting the CA (or plaintext)."""
    if PROTOCOL == "http":
        options = {"ssl": True, "ssl_options": {"ca_certs": ca_file}} if secure else {}
        return triton_http.InferenceServerClient(address, **options)
    options = {"ssl": True, "root_certificates": ca_file} if secure else {}
    return triton_grpc.InferenceServerClient(address, **options)


def aio_client_of(address: str, ca_file: str) -> Any:
    if PROTOCOL == "http":
        context = ssl.create_default_context(cafile=ca_file)
        return triton_http_aio.InferenceServerClient(address, ssl=True, ssl_context=context)
    return triton_grpc_aio.InferenceServerClient(address, ssl=True, root_certificates=ca_file)


def field(message: Any, name: str) -> Any:
    """A field of a response: a dict over HTTP, a protobuf message over gRPC."""
    return message[name] if isinstance(message, dict) else getattr(message, name)


def tensors(message: Any, name: str) -> list[list[Any]]:
    return [
        [field(t, "name"), field(t, "datatype"), [int(d) for d in field(t, "shape")]]
        for t in field(message, name)
    ]


def features(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 7, size=(rows, 4)).astype(np.float32)


def inputs_of(
    array: np.ndarray, name: str = "features", datatype: str = "FP32", binary: bool = True
) -> list[Any]:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    if PROTOCOL == "http":
        tensor.set_data_from_numpy(array, binary_data=binary)
    else:
        tensor.set_data_from_numpy(array)
    return [tensor]


def requested(name: str, binary: bool = True) -> Any:
    if PROTOCOL == "http":
        return triton.InferRequestedOutput(name, binary_data=binary)
    return triton.InferRequestedOutput(name)


def protocol(client: Any, model: str, **_: Any) -> dict[str, Any]:
    metadata = client.get_model_metadata(model)
    x = features(3)
    full = client.infer(model, inputs_of(x), request_id="req-42")
    only_label = client.infer(model, inputs_of(x), outputs=[requested("label")], model_version="1")
    # Over HTTP: JSON values both ways (the others send and answer binary tensor data).
    as_json = client.infer(model, inputs_of(x, binary=False), outputs=[requested("label", False)])
    return {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "server": field(client.get_server_metadata(), "name"),
        "model_ready": client.is_model_ready(model),
        "v1_ready": client.is_model_ready(model, "1"),
        "missing_ready": client.is_model_ready(model, "99"),
        "inputs": tensors(metadata, "inputs"),
        "outputs": tensors(metadata, "outputs"),
        # HTTP only: the gRPC message has no parameters.
        "parameters": metadata.get("parameters") if isinstance(metadata, dict) else None,
        "id": field(full.get_response(), "id"),
        "version": field(full.get_response(), "model_version"),
        "x": x.tolist(),
        "label": full.as_numpy("label").tolist(),
        "probabilities": full.as_numpy("probabilities").tolist(),
        "selected": [field(o, "name") for o in field(only_label.get_response(), "outputs")],
        "json_label": as_json.as_numpy("label").tolist(),
    }


def invalid(client: Any, model: str, **_: Any) -> dict[str, Any]:
    cases: dict[str, Any] = {
        "wrong datatype": lambda: client.infer(
            model, inputs_of(features(2).astype(np.float64), datatype="FP64")
        ),
        "wrong shape": lambda: client.infer(model, inputs_of(np.zeros((2, 3), np.float32))),
        "wrong name": lambda: client.infer(model, inputs_of(features(2), name="x")),
        "batch too large": lambda: client.infer(model, inputs_of(features(300))),
        "nan": lambda: client.infer(model, inputs_of(np.full((1, 4), np.nan, np.float32))),
        "unknown model": lambda: client.infer("no-such-model", inputs_of(features(1))),
        "unknown version": lambda: client.infer(model, inputs_of(features(1)), model_version="99"),
        "bad version": lambda: client.infer(model, inputs_of(features(1)), model_version="latest"),
        "unknown output": lambda: client.infer(
            model, inputs_of(features(1)), outputs=[requested("nope")]
        ),
    }
    results = {}
    for name, call in cases.items():
        try:
            call()
            results[name] = ["OK", ""]
        except InferenceServerException as error:
            results[name] = [error.status(), error.message()]
    return results


async def load(
    address: str,
    model: str,
    requests: int = 1000,
    concurrency: int = 16,
    keys: int = 0,
    seconds: float = 0.0,
    stop_file: str = "",
    ca_file: str = "",
    **_: Any,
) -> dict[str, Any]:
    """Many batch-1 requests; counts versions per routing key and every failure. With
    `seconds`, for that long, or until `stop_file` exists (the test is done) if sooner."""
    client = aio_client_of(address, ca_file)
    versions: Counter[str] = Counter()
    per_key: dict[str, set[str]] = {}
    failures: list[str] = []
    sent = 0
    deadline = time.monotonic() + seconds
    stopped = asyncio.Event()

    async def watch_stop_file() -> None:
        while not await asyncio.to_thread(os.path.exists, stop_file):
            await asyncio.sleep(0.1)
        stopped.set()

    def more() -> bool:
        if stopped.is_set():
            return False
        return (sent < requests) if not seconds else (time.monotonic() < deadline)

    async def worker(index: int) -> None:
        nonlocal sent
        while more():
            number = sent
            sent += 1
            parameters = {"flywheel-routing-key": f"user-{number % keys}"} if keys else None
            try:
                result = await client.infer(
                    model,
                    inputs_of(features(1, number)),
                    request_id=f"r-{index}-{number}",
                    parameters=parameters,
                )
            except InferenceServerException as error:
                failures.append(f"{error.status()}: {error.message()}")
                continue
            version = field(result.get_response(), "model_version")
            versions[version] += 1
            if keys:
                per_key.setdefault(f"user-{number % keys}", set()).add(version)

    watcher = asyncio.create_task(watch_stop_file()) if stop_file else None
    await asyncio.gather(*(worker(i) for i in range(concurrency)))
    if watcher is not None:
        watcher.cancel()
    await client.close()
    return {
        "versions": dict(versions),
        "sticky_changes": sum(len(v) > 1 for v in per_key.values()),
        "keys_seen": len(per_key),
        "failures": failures[:20],
        "failure_count": len(failures),
        "sent": sent,
    }


def bearer(
    client: Any, model: str, token: str, address: str, ca_file: str, **_: Any
) -> dict[str, Any]:
    """README's client: TLS trusting the CA, the token as a header. Then the same call
    without the token, and without TLS."""
    x = features(1)
    answered = client.infer(model, inputs_of(x), headers={"authorization": f"Bearer {token}"})
    outcomes: dict[str, Any] = {"with token": field(answered.get_response(), "model_version")}
    plaintext = client_of(address, ca_file, secure=False)
    for name, call in {
        "without token": lambda: client.infer(model, inputs_of(x)),
        "wrong token": lambda: client.infer(
            model, inputs_of(x), headers={"authorization": "Bearer not-a-token"}
        ),
        "plaintext": lambda: plaintext.infer(
            model, inputs_of(x), headers={"authorization": f"Bearer {token}"}
        ),
    }.items():
        try:
            call()
            outcomes[name] = "answered"
        except InferenceServerException as error:
            outcomes[name] = error.status()
        except (OSError, HTTPConnectionClosed):  # over HTTP, a TLS port hangs up
            outcomes[name] = "connection refused"
    return outcomes


def main() -> None:
    address, scenario, arguments = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    ca_file = sys.argv[4]
    if scenario == "load":
        print(json.dumps(asyncio.run(load(address, ca_file=ca_file, **arguments))))
        return
    client = client_of(address, ca_file)
    scenarios = {"protocol": protocol, "invalid": invalid, "bearer": bearer}
    print(json.dumps(scenarios[scenario](client, address=address, ca_file=ca_file, **arguments)))


if __name__ == "__main__":
    main()
