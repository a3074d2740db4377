"""Drives the gateway with the stock tritonclient, unmodified, and prints results as JSON.

Runs in its own process: tritonclient registers the same protobuf names as Flywheel's
`inference` package. Usage: triton_driver.py ADDRESS SCENARIO JSON_ARGUMENTS CA_FILE
(the CA the gateway's certificate chains to: tritonclient's own `ssl=True` options).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from typing import Any

import numpy as np
import tritonclient.grpc as triton
import tritonclient.grpc.aio as triton_aio
from tritonclient.utils import InferenceServerException


def features(rows: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 7, size=(rows, 4)).astype(np.float32)


def inputs_of(array: np.ndarray, name: str = "features", datatype: str = "FP32") -> list[Any]:
    tensor = triton.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return [tensor]


def protocol(client: triton.InferenceServerClient, model: str, **_: Any) -> dict[str, Any]:
    metadata = client.get_model_metadata(model)
    x = features(3)
    full = client.infer(model, inputs_of(x), request_id="req-42")
    only_label = client.infer(
        model, inputs_of(x), outputs=[triton.InferRequestedOutput("label")], model_version="1"
    )
    return {
        "live": client.is_server_live(),
        "ready": client.is_server_ready(),
        "server": client.get_server_metadata().name,
        "model_ready": client.is_model_ready(model),
        "v1_ready": client.is_model_ready(model, "1"),
        "missing_ready": client.is_model_ready(model, "99"),
        "inputs": [(i.name, i.datatype, list(i.shape)) for i in metadata.inputs],
        "outputs": [(o.name, o.datatype, list(o.shape)) for o in metadata.outputs],
        "id": full.get_response().id,
        "version": full.get_response().model_version,
        "x": x.tolist(),
        "label": full.as_numpy("label").tolist(),
        "probabilities": full.as_numpy("probabilities").tolist(),
        "selected": [o.name for o in only_label.get_response().outputs],
    }


def invalid(client: triton.InferenceServerClient, model: str, **_: Any) -> dict[str, Any]:
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
            model, inputs_of(features(1)), outputs=[triton.InferRequestedOutput("nope")]
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
    client = triton_aio.InferenceServerClient(address, ssl=True, root_certificates=ca_file)
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
            version = result.get_response().model_version
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
    client: triton.InferenceServerClient, model: str, token: str, address: str, **_: Any
) -> dict[str, Any]:
    """README's client: TLS trusting the CA, the token as a header. Then the same call
    without the token, and without TLS."""
    x = features(1)
    answered = client.infer(model, inputs_of(x), headers={"authorization": f"Bearer {token}"})
    outcomes: dict[str, Any] = {"with token": answered.get_response().model_version}
    plaintext = triton.InferenceServerClient(address)
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
    return outcomes


def main() -> None:
    address, scenario, arguments = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
    ca_file = sys.argv[4]
    if scenario == "load":
        print(json.dumps(asyncio.run(load(address, ca_file=ca_file, **arguments))))
        return
    # tritonclient.grpc reads root_certificates from a file name.
    client = triton.InferenceServerClient(address, ssl=True, root_certificates=ca_file)
    scenarios = {"protocol": protocol, "invalid": invalid, "bearer": bearer}
    print(json.dumps(scenarios[scenario](client, address=address, **arguments)))


if __name__ == "__main__":
    main()
