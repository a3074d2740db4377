"""`register`: a trained model into the registry, converted, checked, streamed.

    from flywheel_sdk import register
    version = register(pipeline, "breast-cancer", reference=x_train[:1000],
                       metrics={"accuracy": 0.97}, lineage=Lineage(dataset_uri=...))

The model becomes ONNX (conversion.py), is checked against the original on the reference
sample (checks.py: a model that does not answer as the original is never uploaded), and
goes to the registry in one RegisterModelVersion stream with the reference sample the
drift detector compares production traffic with, its metrics and its lineage.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from flywheel.registry.v1 import registry_pb2 as registry_pb
from flywheel.registry.v1 import registry_pb2_grpc as registry_grpc
from flywheel.registry.v1 import types_pb2 as registry_types
from flywheel_common.channels import aio_channel
from flywheel_common.registration import registration
from flywheel_common.settings import ClientTlsSettings
from flywheel_common.signatures import Signature, session_signature
from flywheel_sdk.checks import Agreement, ConversionMismatch, Tolerances, check
from flywheel_sdk.conversion import Converted, Task, to_onnx

CHUNK_BYTES = 1 << 20
DEFAULT_TOLERANCES = Tolerances()
Lineage = registry_types.Lineage
"""Where a version came from: dataset URI and sha256, code version, parent version, ..."""


@dataclass(frozen=True)
class Registry:
    """Where the registry is and how to call it."""

    address: str
    tls: ClientTlsSettings = field(default_factory=ClientTlsSettings)
    token: str = ""

    @classmethod
    def from_environment(cls) -> Registry:
        """The CLI's settings: FLYWHEEL_CLI_REGISTRY, _TOKEN and _TLS__*, or `make run`'s
        .run/cli.env."""
        from flywheel_cli.connection import Addresses  # the CLI's settings, read when asked

        addresses = Addresses()
        return cls(addresses.registry, addresses.tls, addresses.token)


@dataclass(frozen=True)
class Registered:
    """A version the registry took, and how the converted model matched the original."""

    model: str
    version: int
    converted: Converted
    agreement: Agreement


def register(
    model: Any,
    name: str,
    *,
    reference: np.ndarray,
    signature: Signature | None = None,
    metrics: Mapping[str, float] | None = None,
    lineage: registry_types.Lineage | None = None,
    params: Mapping[str, str] | None = None,
    feature_names: Sequence[str] | None = None,
    aliases: Sequence[str] = (),
    description: str = "",
    idempotency_key: str = "",
    task: Task | str | None = None,
    tolerances: Tolerances = DEFAULT_TOLERANCES,
    registry: Registry | None = None,
) -> Registered:
    """Convert `model` (fitted) to ONNX, check it against the original on `reference` (the
    rows the drift detector will compare production with, [rows, features]), and register
    it as the next version of `name`. `signature`, when given, is what the converted model
    must declare (ValueError otherwise). Runs its own event loop: call `register_async`
    from async code."""
    return asyncio.run(
        register_async(
            model,
            name,
            reference=reference,
            signature=signature,
            metrics=metrics,
            lineage=lineage,
            params=params,
            feature_names=feature_names,
            aliases=aliases,
            description=description,
            idempotency_key=idempotency_key,
            task=task,
            tolerances=tolerances,
            registry=registry,
        )
    )


async def register_async(
    model: Any,
    name: str,
    *,
    reference: np.ndarray,
    signature: Signature | None = None,
    metrics: Mapping[str, float] | None = None,
    lineage: registry_types.Lineage | None = None,
    params: Mapping[str, str] | None = None,
    feature_names: Sequence[str] | None = None,
    aliases: Sequence[str] = (),
    description: str = "",
    idempotency_key: str = "",
    task: Task | str | None = None,
    tolerances: Tolerances = DEFAULT_TOLERANCES,
    registry: Registry | None = None,
) -> Registered:
    rows = np.ascontiguousarray(reference, dtype=np.float32)
    if rows.ndim != 2 or not len(rows):
        raise ValueError(f"reference must be rows of features, [rows, features]; got {rows.shape}")
    converted = to_onnx(model, rows.shape[1], task)
    agreement = check(converted, model, rows, tolerances)
    if signature is not None:
        _check_signature(converted, signature)
    messages = registration(
        name,
        converted.onnx,
        sample=rows.tobytes(),
        n_features=rows.shape[1],
        feature_names=feature_names,
        chunk=CHUNK_BYTES,
        description=description,
        params=dict(params or {}),
        metrics=dict(metrics or {}),
        lineage=lineage,
        aliases=list(aliases),
        idempotency_key=idempotency_key,
    )
    target = registry or Registry.from_environment()
    version = await _stream(target, messages)
    return Registered(name, version, converted, agreement)


def _check_signature(converted: Converted, expected: Signature) -> None:
    import onnxruntime

    session = onnxruntime.InferenceSession(converted.onnx, providers=["CPUExecutionProvider"])
    actual = session_signature(session)
    if actual != expected:
        raise ConversionMismatch(
            "the converted model declares "
            + "; ".join(spec.describe() for spec in (*actual.inputs, *actual.outputs))
            + ", not the signature given: "
            + "; ".join(spec.describe() for spec in (*expected.inputs, *expected.outputs))
        )


async def _stream(
    registry: Registry, messages: list[registry_pb.RegisterModelVersionRequest]
) -> int:
    async with aio_channel(
        registry.address,
        registry.tls,
        options=[("grpc.max_send_message_length", 64 << 20)],
        token=registry.token,
    ) as channel:
        stub = registry_grpc.RegistryServiceStub(channel)
        response = await stub.RegisterModelVersion(iter(messages))
    return int(response.model_version.version)
