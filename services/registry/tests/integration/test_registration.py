"""RegisterModelVersion over real gRPC: validation, storage, events, idempotency, concurrency."""

from __future__ import annotations

import asyncio
import hashlib

import grpc
import onnx
import pytest

from flywheel.registry.v1 import events_pb2 as events
from flywheel.registry.v1 import registry_pb2 as pb
from flywheel.registry.v1 import types_pb2 as types
from flywheel_common.testing import IrisModels, registration

from .conftest import (
    MAX_ARTIFACT_BYTES,
    RunningRegistry,
    metadata,
    model_events,
    register,
)


async def test_registration_stores_the_version_its_signature_and_announces_it(
    registry: RunningRegistry, iris: IrisModels, model_name: str, kafka_bootstrap: str
) -> None:
    client = registry.client()
    lineage = types.Lineage(
        dataset_uri="sklearn://iris",
        dataset_sha256="a" * 64,
        code_version="abc123",
        triggered_by="manual",
        training_entrypoint="examples/iris/train.py",
    )
    response = await register(
        client,
        registration(
            model_name,
            iris.classifier,
            sample=iris.reference_sample,
            description="first",
            params={"C": "1.0"},
            metrics={"accuracy": 0.97},
            tags={"team": "ml"},
            lineage=lineage,
        ),
    )
    version = response.model_version
    assert (version.model, version.version, response.replayed) == (model_name, 1, False)
    assert version.status == types.MODEL_VERSION_STATUS_READY
    assert version.artifact.sha256 == hashlib.sha256(iris.classifier).hexdigest()
    assert version.artifact.size_bytes == len(iris.classifier)
    assert version.artifact.producer_name == "skl2onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in version.signature.inputs] == [
        ("features", "FP32", [-1, 4])
    ]
    assert [(t.name, t.datatype) for t in version.signature.outputs] == [
        ("label", "INT64"),
        ("probabilities", "FP32"),
    ]
    assert version.reference_sample.sha256 == hashlib.sha256(iris.reference_sample).hexdigest()
    assert list(version.reference_sample.spec.shape) == [150, 4]
    assert version.lineage == lineage
    assert dict(version.metrics) == {"accuracy": 0.97}
    assert version.created_by.startswith("writer-")

    fetched = await registry.client("reader").GetModelVersion(
        pb.GetModelVersionRequest(model=model_name, version=1)
    )
    assert fetched.model_version == version

    [(_, event)] = await model_events(kafka_bootstrap, model_name, at_least=1)
    assert isinstance(event, events.ModelVersionRegistered)
    assert event.version == 1
    assert event.artifact.sha256 == version.artifact.sha256
    assert event.reference_sample.sha256 == version.reference_sample.sha256
    assert event.signature == version.signature
    assert event.lineage == lineage


async def test_artifact_and_reference_sample_download_with_digests(
    registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    await register(
        registry.client(), registration(model_name, iris.classifier, sample=iris.reference_sample)
    )
    reader = registry.client("reader")
    chunks = [
        m async for m in reader.GetArtifact(pb.GetArtifactRequest(model=model_name, version=1))
    ]
    assembled = b"".join(m.chunk for m in chunks)
    assert assembled == iris.classifier
    assert chunks[0].artifact.sha256 == hashlib.sha256(assembled).hexdigest()
    resumed = [
        m
        async for m in reader.GetArtifact(
            pb.GetArtifactRequest(model=model_name, version=1, offset=100)
        )
    ]
    assert b"".join(m.chunk for m in resumed) == iris.classifier[100:]
    assert resumed[0].offset == 100
    sample = [
        m
        async for m in reader.GetReferenceSample(
            pb.GetReferenceSampleRequest(model=model_name, version=1)
        )
    ]
    assert b"".join(m.chunk for m in sample) == iris.reference_sample
    assert sample[0].reference_sample.sha256 == hashlib.sha256(iris.reference_sample).hexdigest()


async def test_a_retried_registration_returns_the_same_version(
    registry: RunningRegistry, iris: IrisModels, model_name: str, kafka_bootstrap: str
) -> None:
    messages = registration(model_name, iris.classifier, idempotency_key="train-run-42")
    first = await register(registry.client(), messages)
    again = await register(registry.client(), messages)
    assert (first.model_version.version, first.replayed) == (1, False)
    assert (again.model_version.version, again.replayed) == (1, True)
    other = await register(registry.client(), registration(model_name, iris.retrained))
    assert other.model_version.version == 2
    found = await model_events(kafka_bootstrap, model_name, at_least=2)
    assert [e.version for _, e in found] == [1, 2]


async def test_twenty_concurrent_registrations_number_one_to_twenty(
    registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    client = registry.client()
    responses = await asyncio.gather(
        *(
            register(client, registration(model_name, iris.classifier, description=f"run {i}"))
            for i in range(20)
        )
    )
    assert sorted(r.model_version.version for r in responses) == list(range(1, 21))
    listed = await client.ListModelVersions(
        pb.ListModelVersionsRequest(model=model_name, page_size=50)
    )
    assert [v.version for v in listed.model_versions] == list(range(20, 0, -1))
    model = await client.GetModel(pb.GetModelRequest(name=model_name))
    assert (model.model.latest_version, model.model.version_count) == (20, 20)


def _external_data_model(iris: IrisModels) -> bytes:
    model = onnx.load_model_from_string(iris.classifier)
    weights = model.graph.initializer[0] if model.graph.initializer else None
    if weights is None:  # the classifier keeps its weights in node attributes
        attribute = next(
            a for n in model.graph.node for a in n.attribute if a.name == "coefficients"
        )
        tensor = onnx.helper.make_tensor("w", onnx.TensorProto.FLOAT, [1], [0.0])
        model.graph.initializer.append(tensor)
        weights = model.graph.initializer[-1]
        del attribute
    weights.data_location = onnx.TensorProto.EXTERNAL
    del weights.external_data[:]
    entry = weights.external_data.add()
    entry.key, entry.value = "location", "../../../etc/passwd"
    weights.ClearField("float_data")
    weights.ClearField("raw_data")
    return model.SerializeToString()


@pytest.mark.parametrize(
    ("case", "code", "fragment"),
    [
        ("not onnx", grpc.StatusCode.INVALID_ARGUMENT, "not an ONNX model"),
        ("truncated", grpc.StatusCode.INVALID_ARGUMENT, "ONNX"),
        ("sha mismatch", grpc.StatusCode.INVALID_ARGUMENT, "sha256 mismatch"),
        ("too large", grpc.StatusCode.RESOURCE_EXHAUSTED, f"limit of {MAX_ARTIFACT_BYTES} bytes"),
        (
            "external data",
            grpc.StatusCode.INVALID_ARGUMENT,
            "external data file '../../../etc/passwd'",
        ),
        ("bad name", grpc.StatusCode.INVALID_ARGUMENT, "is not a valid name"),
        ("bad alias", grpc.StatusCode.INVALID_ARGUMENT, "is not a valid name"),
        ("no metadata", grpc.StatusCode.INVALID_ARGUMENT, "first message"),
        (
            "sample without layout",
            grpc.StatusCode.INVALID_ARGUMENT,
            "announces no reference_sample",
        ),
        ("sample size", grpc.StatusCode.INVALID_ARGUMENT, "bytes arrived"),
        ("sample features", grpc.StatusCode.INVALID_ARGUMENT, "takes 4"),
        ("chunks out of order", grpc.StatusCode.INVALID_ARGUMENT, "after"),
        ("empty", grpc.StatusCode.INVALID_ARGUMENT, "artifact is empty"),
    ],
)
async def test_rejected_registrations_leave_nothing_behind(
    registry: RunningRegistry,
    iris: IrisModels,
    model_name: str,
    kafka_bootstrap: str,
    case: str,
    code: grpc.StatusCode,
    fragment: str,
) -> None:
    good = registration(model_name, iris.classifier, sample=iris.reference_sample)
    messages = {
        "not onnx": registration(model_name, b"definitely not a protobuf \xff\xfe" * 20),
        "truncated": registration(model_name, iris.classifier[: len(iris.classifier) // 2]),
        "sha mismatch": good[:-1]
        + [
            pb.RegisterModelVersionRequest(
                expected_digests=pb.ExpectedDigests(artifact_sha256="0" * 64)
            )
        ],
        "too large": registration(model_name, b"\x00" * (MAX_ARTIFACT_BYTES + 1), chunk=8192),
        "external data": registration(model_name, _external_data_model(iris)),
        "bad name": registration("Iris Model!", iris.classifier),
        "bad alias": registration(model_name, iris.classifier, aliases=["Prod"]),
        "no metadata": good[1:],
        "sample without layout": [metadata(model_name)]
        + [pb.RegisterModelVersionRequest(artifact_chunk=iris.classifier)]
        + [pb.RegisterModelVersionRequest(reference_sample_chunk=b"\x00" * 16)],
        "sample size": registration(model_name, iris.classifier, sample=iris.reference_sample)[:-1]
        + [pb.RegisterModelVersionRequest(reference_sample_chunk=b"\x00\x00\x00\x00")],
        "sample features": registration(
            model_name, iris.classifier, sample=iris.features[:, :3].copy().tobytes(), n_features=3
        ),
        "chunks out of order": [good[0], good[-2], *good[1:-2]],
        "empty": [metadata(model_name)],
    }[case]
    before_files = registry.artifact_files
    with pytest.raises(grpc.aio.AioRpcError) as rejected:
        await register(registry.client(), messages)
    assert rejected.value.code() == code, rejected.value.details()
    assert fragment in (rejected.value.details() or "")

    assert registry.artifact_files == before_files
    assert registry.temp_files == []
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await registry.client("reader").GetModelVersion(
            pb.GetModelVersionRequest(model=model_name, version=1)
        )
    assert missing.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT)
    assert await model_events(kafka_bootstrap, model_name, at_least=0, timeout_ms=0) == []


async def test_incompatible_signature_needs_breaking_change(
    registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    client = registry.client()
    await register(client, registration(model_name, iris.classifier, aliases=["production"]))
    with pytest.raises(grpc.aio.AioRpcError) as rejected:
        await register(client, registration(model_name, iris.three_features))
    assert rejected.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = rejected.value.details() or ""
    assert "incompatible with production version 1" in details
    assert "features: FP32[?, 4] -> features: FP32[?, 3]" in details
    assert "breaking_change=true" in details
    accepted = await register(
        client, registration(model_name, iris.three_features, breaking_change=True)
    )
    assert accepted.model_version.version == 2  # the rejected attempt used no number
    assert accepted.model_version.breaking_change


async def test_writers_register_and_readers_cannot(
    registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await register(registry.client("reader"), registration(model_name, iris.classifier))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await registry.client("nobody").GetModel(pb.GetModelRequest(name=model_name))
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
