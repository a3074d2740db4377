"""RegisterModelVersion over real gRPC: validation, storage, events, idempotency, concurrency."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from itertools import pairwise
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest

from flywheel.registry.v1 import events_pb2 as events
from flywheel.registry.v1 import registry_pb2 as pb
from flywheel.registry.v1 import types_pb2 as types
from flywheel_common.registration import registration
from flywheel_registry.domain import MAX_PAGE_SIZE
from flywheel_testing.models import IrisModels

from .conftest import (
    MAX_ARTIFACT_BYTES,
    MAX_GRAPH_NODES,
    MAX_REFERENCE_SAMPLE_BYTES,
    RunningRegistry,
    expect_error,
    metadata,
    model_events,
    register,
    relay_barrier,
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


@pytest.mark.parametrize("artifact_store", ["local", "database", "s3"], indirect=True)
async def test_artifact_and_reference_sample_download_with_digests(
    registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    await register(
        registry.client(), registration(model_name, iris.classifier, sample=iris.reference_sample)
    )
    assert await registry.stored_blobs() == {
        hashlib.sha256(iris.classifier).hexdigest(),
        hashlib.sha256(iris.reference_sample).hexdigest(),
    }
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


@pytest.mark.parametrize("artifact_store", ["database", "s3"], indirect=True)
async def test_a_digest_mismatch_leaves_nothing_in_a_shared_store(
    registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    wrong = pb.RegisterModelVersionRequest(
        expected_digests=pb.ExpectedDigests(artifact_sha256="0" * 64)
    )
    await expect_error(
        register(
            registry.client(), [*registration(model_name, iris.classifier, digests=False), wrong]
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "sha256 mismatch",
    )
    assert await registry.stored_blobs() == set()
    assert registry.spooled_files == []
    await expect_error(
        registry.client("reader").GetModel(pb.GetModelRequest(name=model_name)),
        grpc.StatusCode.NOT_FOUND,
        f"model {model_name!r} does not exist",
    )


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


FEATURES = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 4])
RESULT = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 4])


def _onnx(
    nodes: list[onnx.NodeProto],
    *extra_inputs: onnx.ValueInfoProto,
    functions: Sequence[onnx.FunctionProto] = (),
) -> bytes:
    """A small model from `x` FP32[?, 4] to `y` FP32[?, 4], at opset 17 and IR version 8
    (which onnxruntime loads)."""
    graph = onnx.helper.make_graph(nodes, "tiny", [FEATURES, *extra_inputs], [RESULT])
    opsets = [onnx.helper.make_opsetid("", 17)]
    opsets += [onnx.helper.make_opsetid(function.domain, 1) for function in functions]
    model = onnx.helper.make_model(
        graph, opset_imports=opsets, ir_version=8, functions=list(functions)
    )
    return model.SerializeToString()


def _weights(name: str, location: str) -> onnx.TensorProto:
    """Four FP32 weights kept in an external file."""
    tensor = onnx.helper.make_tensor(name, onnx.TensorProto.FLOAT, [4], bytes(16), raw=True)
    onnx.external_data_helper.set_external_data(tensor, location=location, offset=0, length=16)
    tensor.ClearField("raw_data")
    return tensor


def _external_data_model(iris: IrisModels, location: str) -> bytes:
    """The iris classifier with one more initializer, stored in an external file."""
    model = onnx.load_model_from_string(iris.classifier)
    model.graph.initializer.append(_weights("w", location))
    return model.SerializeToString()


def _external_data_in_subgraph() -> bytes:
    """An If whose then-branch adds weights stored in an external file."""
    then_out = onnx.helper.make_tensor_value_info("then_y", onnx.TensorProto.FLOAT, [None, 4])
    else_out = onnx.helper.make_tensor_value_info("else_y", onnx.TensorProto.FLOAT, [None, 4])
    then_branch = onnx.helper.make_graph(
        [onnx.helper.make_node("Add", ["x", "w"], ["then_y"])],
        "then",
        [],
        [then_out],
        initializer=[_weights("w", "weights.bin")],
    )
    else_branch = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["else_y"])], "else", [], [else_out]
    )
    condition = onnx.helper.make_tensor_value_info("c", onnx.TensorProto.BOOL, [])
    branch = onnx.helper.make_node(
        "If", ["c"], ["y"], then_branch=then_branch, else_branch=else_branch
    )
    return _onnx([branch], condition)


def _external_data_in_sparse_constant() -> bytes:
    """A Constant whose sparse value lives in an external file; onnxruntime would read it
    from the server's working directory."""
    values = _weights("w_values", "weights.bin")
    indices = onnx.helper.make_tensor("w_indices", onnx.TensorProto.INT64, [4], [0, 1, 2, 3])
    sparse = onnx.helper.make_sparse_tensor(values, indices, [4])
    return _onnx(
        [
            onnx.helper.make_node("Constant", [], ["w"], sparse_value=sparse),
            onnx.helper.make_node("Add", ["x", "w"], ["y"]),
        ]
    )


def _external_data_in_function() -> bytes:
    """A model-local function whose Constant lives in an external file."""
    add_weights = onnx.helper.make_function(
        "local",
        "AddWeights",
        ["a"],
        ["b"],
        [
            onnx.helper.make_node("Constant", [], ["w"], value=_weights("w", "weights.bin")),
            onnx.helper.make_node("Add", ["a", "w"], ["b"]),
        ],
        [onnx.helper.make_opsetid("", 17)],
    )
    return _onnx(
        [onnx.helper.make_node("AddWeights", ["x"], ["y"], domain="local")],
        functions=[add_weights],
    )


def _fails_the_checker() -> bytes:
    """Parses, but Relu takes one input."""
    return _onnx([onnx.helper.make_node("Relu", ["x", "x"], ["y"])])


def _fails_to_load() -> bytes:
    """Passes the checker (which infers no types), but onnxruntime refuses to add FP32 to
    INT64."""
    numbers = onnx.helper.make_tensor_value_info("n", onnx.TensorProto.INT64, [None, 4])
    return _onnx([onnx.helper.make_node("Add", ["x", "n"], ["y"])], numbers)


def _expanding_constant() -> bytes:
    """A few hundred bytes that build a constant of 10**10 elements when run: a
    decompression bomb for the gateway that would serve it."""
    shape = onnx.numpy_helper.from_array(np.array([100_000, 100_000], dtype=np.int64))
    return _onnx(
        [
            onnx.helper.make_node("Constant", [], ["shape"], value=shape),
            onnx.helper.make_node("ConstantOfShape", ["shape"], ["big"]),
            onnx.helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
            onnx.helper.make_node("Add", ["x", "total"], ["y"]),
        ]
    )


def _many_nodes(count: int) -> bytes:
    """A chain of `count` Identity nodes: small in bytes, big as a graph."""
    names = ["x", *(f"t{i}" for i in range(count - 1)), "y"]
    return _onnx([onnx.helper.make_node("Identity", [a], [b]) for a, b in pairwise(names)])


SELF_CONTAINED = "the registry accepts self-contained models only (save without external data)"
BAD_NAME = "Iris Model!"
TRAVERSAL = "../../etc/passwd"


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
            f"external data file '../../../etc/passwd'; {SELF_CONTAINED}",
        ),
        (
            "relative external data",
            grpc.StatusCode.INVALID_ARGUMENT,
            f"tensor 'w' refers to external data file 'weights.bin'; {SELF_CONTAINED}",
        ),
        (
            "external data in a subgraph",
            grpc.StatusCode.INVALID_ARGUMENT,
            f"tensor 'w' refers to external data file 'weights.bin'; {SELF_CONTAINED}",
        ),
        (
            "external data in a sparse constant",
            grpc.StatusCode.INVALID_ARGUMENT,
            f"tensor 'w_values' refers to external data file 'weights.bin'; {SELF_CONTAINED}",
        ),
        (
            "external data in a function",
            grpc.StatusCode.INVALID_ARGUMENT,
            f"tensor 'w' refers to external data file 'weights.bin'; {SELF_CONTAINED}",
        ),
        (
            "fails the checker",
            grpc.StatusCode.INVALID_ARGUMENT,
            "the ONNX checker rejects the model: Node with schema(::Relu",
        ),
        ("fails to load", grpc.StatusCode.INVALID_ARGUMENT, "onnxruntime cannot load the model"),
        ("bad name", grpc.StatusCode.INVALID_ARGUMENT, "is not a valid name"),
        ("traversal name", grpc.StatusCode.INVALID_ARGUMENT, "is not a valid name"),
        ("bad alias", grpc.StatusCode.INVALID_ARGUMENT, "is not a valid name"),
        ("traversal alias", grpc.StatusCode.INVALID_ARGUMENT, "is not a valid name"),
        (
            "expanding constant",
            grpc.StatusCode.INVALID_ARGUMENT,
            "tensor 'big' has shape [100000, 100000]: 10000000000 elements, more than the limit",
        ),
        (
            "too many nodes",
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the model has {MAX_GRAPH_NODES + 1} nodes, more than the limit of {MAX_GRAPH_NODES}",
        ),
        ("no metadata", grpc.StatusCode.INVALID_ARGUMENT, "first message"),
        (
            "sample without layout",
            grpc.StatusCode.INVALID_ARGUMENT,
            "announces no reference_sample",
        ),
        ("sample size", grpc.StatusCode.INVALID_ARGUMENT, "bytes arrived"),
        ("sample features", grpc.StatusCode.INVALID_ARGUMENT, "takes 4"),
        (
            "sample sha mismatch",
            grpc.StatusCode.INVALID_ARGUMENT,
            f"reference sample sha256 mismatch: expected {'0' * 64}, received ",
        ),
        (
            "sample too large",
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"the reference sample exceeds the limit of {MAX_REFERENCE_SAMPLE_BYTES} bytes",
        ),
        ("chunks out of order", grpc.StatusCode.INVALID_ARGUMENT, "after"),
        ("empty", grpc.StatusCode.INVALID_ARGUMENT, "artifact is empty"),
    ],
)
async def test_rejected_registrations_leave_nothing_behind(
    shared_registry: RunningRegistry,
    iris: IrisModels,
    model_name: str,
    kafka_bootstrap: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    code: grpc.StatusCode,
    fragment: str,
) -> None:
    good = registration(model_name, iris.classifier, sample=iris.reference_sample)
    artifact_sha256 = hashlib.sha256(iris.classifier).hexdigest()
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
        "external data": registration(
            model_name, _external_data_model(iris, "../../../etc/passwd")
        ),
        "relative external data": registration(
            model_name, _external_data_model(iris, "weights.bin")
        ),
        "external data in a subgraph": registration(model_name, _external_data_in_subgraph()),
        "external data in a sparse constant": registration(
            model_name, _external_data_in_sparse_constant()
        ),
        "external data in a function": registration(model_name, _external_data_in_function()),
        "fails the checker": registration(model_name, _fails_the_checker()),
        "fails to load": registration(model_name, _fails_to_load()),
        "bad name": registration(BAD_NAME, iris.classifier),
        "traversal name": registration(TRAVERSAL, iris.classifier),
        "bad alias": registration(model_name, iris.classifier, aliases=["Prod"]),
        "traversal alias": registration(model_name, iris.classifier, aliases=[TRAVERSAL]),
        "expanding constant": registration(model_name, _expanding_constant()),
        "too many nodes": registration(model_name, _many_nodes(MAX_GRAPH_NODES + 1)),
        "no metadata": good[1:],
        "sample without layout": [metadata(model_name)]
        + [pb.RegisterModelVersionRequest(artifact_chunk=iris.classifier)]
        + [pb.RegisterModelVersionRequest(reference_sample_chunk=b"\x00" * 16)],
        "sample size": registration(model_name, iris.classifier, sample=iris.reference_sample)[:-1]
        + [pb.RegisterModelVersionRequest(reference_sample_chunk=b"\x00\x00\x00\x00")],
        "sample features": registration(
            model_name, iris.classifier, sample=iris.features[:, :3].copy().tobytes(), n_features=3
        ),
        "sample sha mismatch": good[:-1]
        + [
            pb.RegisterModelVersionRequest(
                expected_digests=pb.ExpectedDigests(
                    artifact_sha256=artifact_sha256, reference_sample_sha256="0" * 64
                )
            )
        ],
        "sample too large": registration(
            model_name, iris.classifier, sample=iris.reference_sample * 8
        ),
        "chunks out of order": [good[0], good[-2], *good[1:-2]],
        "empty": [metadata(model_name)],
    }[case]
    sent_name = {"bad name": BAD_NAME, "traversal name": TRAVERSAL}.get(case, model_name)
    # One registry serves every case: what it held before the case is all it may hold after
    # (the barrier's sentinels register `retrained`, which no case sends).
    registry = shared_registry
    reader = registry.client("reader")
    blobs_before = await registry.stored_blobs()
    every_model = pb.ListModelsRequest(page_size=MAX_PAGE_SIZE)
    models_before = (await reader.ListModels(every_model)).models
    # onnxruntime resolves relative external data against the working directory: with the
    # file really there, only the registry's own rule stands between a model and that file.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weights.bin").write_bytes(bytes(16))
    with pytest.raises(grpc.aio.AioRpcError) as rejected:
        await register(registry.client(), messages)
    assert rejected.value.code() == code, rejected.value.details()
    assert fragment in (rejected.value.details() or ""), rejected.value.details()

    assert await registry.stored_blobs() == blobs_before
    assert registry.spooled_files == []
    if sent_name != model_name:  # a name that cannot be stored cannot be asked for either
        await expect_error(
            reader.GetModel(pb.GetModelRequest(name=sent_name)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "is not a valid name",
        )
    else:
        await expect_error(
            reader.GetModel(pb.GetModelRequest(name=sent_name)),
            grpc.StatusCode.NOT_FOUND,
            f"model {sent_name!r} does not exist",
        )
    # under no other name
    assert (await reader.ListModels(every_model)).models == models_before
    await relay_barrier(registry.client(), kafka_bootstrap, iris.retrained)
    assert await model_events(kafka_bootstrap, sent_name, at_least=0, timeout_ms=0) == []


async def test_incompatible_signature_needs_breaking_change(
    registry: RunningRegistry, iris: IrisModels, model_name: str, kafka_bootstrap: str
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

    # The rejected attempt leaves no version, no blob, no temporary file and no event.
    model = await client.GetModel(pb.GetModelRequest(name=model_name))
    assert (model.model.latest_version, model.model.version_count) == (1, 1)
    listed = await client.ListModelVersions(
        pb.ListModelVersionsRequest(model=model_name, include_archived=True)
    )
    assert [v.version for v in listed.model_versions] == [1]
    assert await registry.stored_blobs() == {hashlib.sha256(iris.classifier).hexdigest()}
    assert registry.spooled_files == []
    await relay_barrier(client, kafka_bootstrap, iris.classifier)
    found = await model_events(kafka_bootstrap, model_name, at_least=0, timeout_ms=0)
    assert [(type(event), event.version) for _, event in found] == [
        (events.ModelVersionRegistered, 1),
        (events.AliasChanged, 1),
        (events.ModelVersionPromoted, 1),
    ]

    accepted = await register(
        client, registration(model_name, iris.three_features, breaking_change=True)
    )
    assert accepted.model_version.version == 2  # the rejected attempt used no number
    assert accepted.model_version.breaking_change


async def test_a_refused_upload_gets_its_status_while_the_client_is_still_sending(
    registry: RunningRegistry, model_name: str
) -> None:
    # The server refuses at once; the client still has 60 messages to write. A grpc.aio
    # client would report INTERNAL for a write that fails after the call ended, unless the
    # server reads what is in flight before answering.
    upload = registration(model_name, bytes(60 * 64 * 1024), chunk=64 * 1024)
    for _ in range(20):
        await expect_error(
            register(registry.client("reader"), upload), grpc.StatusCode.PERMISSION_DENIED
        )


async def test_writers_register_and_readers_cannot(
    registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await register(registry.client("reader"), registration(model_name, iris.classifier))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as anonymous:
        await registry.client("nobody").GetModel(pb.GetModelRequest(name=model_name))
    assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_an_undecodable_message_inside_the_upload_stream_leaves_nothing_behind(
    registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    valid = [message.SerializeToString() for message in registration(model_name, iris.classifier)]
    undecodable = b"\x0a\xff\xff"  # a length-delimited field whose length never ends
    upload = registry.channel.stream_unary(
        "/flywheel.registry.v1.RegistryService/RegisterModelVersion"
    )
    with pytest.raises(grpc.aio.AioRpcError) as rejected:
        await upload(
            iter([valid[0], valid[1], undecodable, *valid[2:]]),
            metadata=(("authorization", "Bearer writer-token"),),
        )
    assert rejected.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid flywheel.registry.v1.RegisterModelVersionRequest" in (
        rejected.value.details() or ""
    )
    assert await registry.stored_blobs() == set()
    assert registry.spooled_files == []
    await expect_error(
        registry.client("reader").GetModel(pb.GetModelRequest(name=model_name)),
        grpc.StatusCode.NOT_FOUND,
    )
