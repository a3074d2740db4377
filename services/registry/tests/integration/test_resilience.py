"""The registry as a process: SIGKILL between commit and publish, and malformed input."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Literal, get_args

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flywheel.registry.v1 import registry_pb2 as pb
from flywheel.registry.v1 import registry_pb2_grpc as pb_grpc
from flywheel.registry.v1 import types_pb2 as types
from flywheel_common.channels import sync_channel
from flywheel_common.registration import registration
from flywheel_common.settings import (
    AuthSettings,
    DatabaseSettings,
    KafkaSettings,
    OutboxSettings,
    TelemetrySettings,
)
from flywheel_registry.settings import RegistrySettings
from flywheel_testing.backends import unused_port
from flywheel_testing.models import IrisModels
from flywheel_testing.platform import TEST_LEASE
from flywheel_testing.processes import service_process
from flywheel_testing.tls import grpc_settings, pki, secure_channel

from .conftest import model_events

ACCEPTABLE = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
}


@asynccontextmanager
async def registry_process(
    database_url: str, kafka_bootstrap: str, data_dir: Path, *, relay_enabled: bool = True
) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    settings = RegistrySettings(
        grpc=grpc_settings(port=unused_port()),
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap),
        telemetry=TelemetrySettings(metrics_port=-1),
        database=DatabaseSettings(url=database_url),
        outbox=OutboxSettings(relay_enabled=relay_enabled),
        lease=TEST_LEASE,  # the killed process's lease lapses within seconds
        data_dir=data_dir,
        max_artifact_bytes=65536,
        auth=AuthSettings(allow_anonymous=True),
    )
    process = await service_process("flywheel_registry", settings)
    try:
        yield process, f"{settings.grpc.host}:{settings.grpc.port}"
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            await asyncio.wait_for(process.wait(), 30)


async def test_registry_killed_between_commit_and_publish_still_publishes_once(
    registry_database_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
    iris_models: IrisModels,
    model_name: str,
) -> None:
    # The first process commits but never publishes: its relay is off, as in a replica that
    # crashes after the commit and before the relay's next round.
    async with registry_process(
        registry_database_url, kafka_bootstrap, tmp_path, relay_enabled=False
    ) as (process, address):
        async with secure_channel(address) as channel:
            stub = pb_grpc.RegistryServiceStub(channel)

            async def stream() -> AsyncIterator[pb.RegisterModelVersionRequest]:
                for message in registration(model_name, iris_models.classifier):
                    yield message

            response = await stub.RegisterModelVersion(stream())
        assert response.model_version.version == 1
        process.send_signal(signal.SIGKILL)
        await process.wait()
    assert await model_events(kafka_bootstrap, model_name, at_least=0, timeout_ms=0) == []

    async with registry_process(registry_database_url, kafka_bootstrap, tmp_path):
        [(event_id, event)] = await model_events(kafka_bootstrap, model_name, at_least=1)
        assert event.version == 1
        await asyncio.sleep(1.5)  # a second copy would arrive now
        again = await model_events(kafka_bootstrap, model_name, at_least=1, timeout_ms=0)
        assert [ce_id for ce_id, _ in again] == [event_id]


# ------------------------------------------------------------------- malformed input

names = st.one_of(
    st.sampled_from(["fuzz-a", "fuzz-b", "production", "candidate"]),
    st.text(max_size=20),
    st.text(alphabet="abc-._0\x00", max_size=140),
)
texts = st.text(max_size=50)
# Small numbers name versions that exist; any int64 probes the edges.
versions = st.one_of(st.integers(0, 3), st.integers(min_value=-(2**63), max_value=2**63 - 1))


def part_strategy(artifact: bytes) -> st.SearchStrategy[pb.RegisterModelVersionRequest]:
    chunk = st.one_of(
        st.binary(max_size=200),
        st.integers(0, len(artifact)).map(lambda cut: artifact[:cut]),
        st.just(artifact),
    )
    return st.one_of(
        chunk.map(lambda data: pb.RegisterModelVersionRequest(artifact_chunk=data)),
        st.binary(max_size=64).map(
            lambda data: pb.RegisterModelVersionRequest(reference_sample_chunk=data)
        ),
        st.builds(
            pb.ExpectedDigests,
            artifact_sha256=st.one_of(st.just(""), st.text(max_size=70)),
            reference_sample_sha256=st.text(alphabet="0123456789abcdef", max_size=64),
        ).map(lambda d: pb.RegisterModelVersionRequest(expected_digests=d)),
        st.just(pb.RegisterModelVersionRequest()),
    )


metadata_strategy = st.builds(
    pb.RegistrationMetadata,
    model=names,
    description=texts,
    params=st.dictionaries(texts, texts, max_size=3),
    metrics=st.dictionaries(texts, st.floats(allow_nan=True, allow_infinity=True), max_size=3),
    tags=st.dictionaries(texts, texts, max_size=3),
    idempotency_key=st.one_of(st.just(""), texts),
    breaking_change=st.booleans(),
    aliases=st.lists(names, max_size=2),
    lineage=st.builds(
        types.Lineage, dataset_sha256=texts, parent_version=versions, triggered_by=texts
    ),
    reference_sample=st.one_of(
        st.none(),
        st.builds(
            types.ReferenceSampleSpec,
            datatype=st.sampled_from(["FP32", "FP64", "INT8", "", "BYTES"]),
            shape=st.lists(st.integers(-3, 2**40), max_size=3),
            feature_names=st.lists(texts, max_size=5),
            input_name=st.sampled_from(["", "features", "nope"]),
        ),
    ),
)


def other_requests() -> st.SearchStrategy[tuple[str, object]]:
    return st.one_of(
        st.builds(pb.GetModelRequest, name=names).map(lambda r: ("GetModel", r)),
        st.builds(pb.GetModelVersionRequest, model=names, version=versions).map(
            lambda r: ("GetModelVersion", r)
        ),
        st.builds(
            pb.ListModelVersionsRequest,
            model=names,
            page_size=st.integers(-(2**31), 2**31 - 1),
            page_token=texts,
        ).map(lambda r: ("ListModelVersions", r)),
        st.builds(pb.ListModelsRequest, name_prefix=texts, page_token=texts).map(
            lambda r: ("ListModels", r)
        ),
        st.builds(
            pb.SetAliasRequest,
            model=names,
            alias=names,
            version=versions,
            reason=texts,
            expected_current_version=st.one_of(st.none(), versions),
        ).map(lambda r: ("SetAlias", r)),
        st.builds(pb.DeleteAliasRequest, model=names, alias=names, reason=texts).map(
            lambda r: ("DeleteAlias", r)
        ),
        st.builds(pb.ArchiveModelVersionRequest, model=names, version=versions, reason=texts).map(
            lambda r: ("ArchiveModelVersion", r)
        ),
        st.builds(
            pb.UpdateModelVersionRequest,
            model=names,
            version=versions,
            set_tags=st.dictionaries(texts, texts, max_size=2),
            remove_tag_keys=st.lists(texts, max_size=2),
        ).map(lambda r: ("UpdateModelVersion", r)),
        st.builds(
            pb.SearchModelVersionsRequest,
            models=st.lists(names, max_size=2),
            tags=st.dictionaries(texts, texts, max_size=2),
            metric_filters=st.lists(
                st.builds(
                    pb.MetricFilter,
                    metric=texts,
                    comparison=st.integers(0, 7),
                    value=st.floats(allow_nan=True),
                ),
                max_size=2,
            ),
            order_by=st.lists(
                st.builds(pb.SortKey, field=st.integers(0, 6), metric=texts), max_size=2
            ),
            page_token=texts,
        ).map(lambda r: ("SearchModelVersions", r)),
        st.builds(pb.GetAliasHistoryRequest, model=names, alias=names, page_token=texts).map(
            lambda r: ("GetAliasHistory", r)
        ),
        st.builds(pb.GetArtifactRequest, model=names, version=versions, offset=versions).map(
            lambda r: ("GetArtifact", r)
        ),
        st.builds(pb.GetReferenceSampleRequest, model=names, version=versions).map(
            lambda r: ("GetReferenceSample", r)
        ),
        st.builds(pb.GetModelVersionByAliasRequest, model=names, alias=names).map(
            lambda r: ("GetModelVersionByAlias", r)
        ),
    )


# What requests after a registration may change; everything else stays as registered.
Changeable = Literal[
    "description", "tags", "aliases", "status", "updated_at", "archived_at", "archive_reason"
]
CHANGEABLE: tuple[Changeable, ...] = get_args(Changeable)


def as_registered(version: types.ModelVersion) -> types.ModelVersion:
    fixed = types.ModelVersion()
    fixed.CopyFrom(version)
    for name in CHANGEABLE:
        fixed.ClearField(name)
    return fixed


@pytest.fixture
def fuzz_registry(
    registry_database_url: str, kafka_bootstrap: str, tmp_path: Path
) -> Iterator[tuple[str, Path]]:
    """A registry process for a synchronous client (hypothesis drives plain functions)."""
    loop = asyncio.new_event_loop()
    context = registry_process(registry_database_url, kafka_bootstrap, tmp_path)
    _, address = loop.run_until_complete(context.__aenter__())
    try:
        yield address, tmp_path
    finally:
        loop.run_until_complete(context.__aexit__(None, None, None))
        loop.close()


def test_malformed_requests_get_precise_statuses_and_leave_no_partial_state(
    fuzz_registry: tuple[str, Path], iris_models: IrisModels
) -> None:
    address, data_dir = fuzz_registry
    channel = sync_channel(address, pki().client_tls())
    stub = pb_grpc.RegistryServiceStub(channel)
    registered: dict[tuple[str, int], types.ModelVersion] = {}
    blobs: set[str] = set()

    def code_of(call: object) -> grpc.StatusCode:
        try:
            result = call() if callable(call) else call
            if hasattr(result, "__iter__") and not isinstance(result, (bytes, str)):
                list(result)
            return grpc.StatusCode.OK
        except grpc.RpcError as error:
            return error.code()

    parts = part_strategy(iris_models.classifier)
    valid = st.builds(
        lambda model, sample, key: registration(
            model,
            iris_models.classifier,
            sample=iris_models.reference_sample if sample else None,
            idempotency_key=key,
            breaking_change=True,
        ),
        st.sampled_from(["fuzz-a", "fuzz-b"]),
        st.booleans(),
        st.sampled_from(["", "", "retry-1"]),
    )
    streams = st.one_of(
        valid,  # well-formed: must succeed or replay
        st.tuples(valid, parts, st.integers(0, 8)).map(  # one stray message inside
            lambda t: [*t[0][: t[2]], t[1], *t[0][t[2] :]]
        ),
        st.tuples(valid, st.integers(1, 8)).map(lambda t: t[0][: -t[1]]),  # cut short
        st.tuples(
            metadata_strategy.map(lambda m: pb.RegisterModelVersionRequest(metadata=m)),
            st.lists(parts, max_size=5),
        ).map(lambda t: [t[0], *t[1]]),
        st.lists(parts, max_size=4),
    )

    @settings(
        max_examples=120,
        deadline=None,
        derandomize=True,  # the same examples in every CI run
        suppress_health_check=list(HealthCheck),
    )
    @given(stream=streams, others=st.lists(other_requests(), max_size=3))
    def exercise(
        stream: list[pb.RegisterModelVersionRequest], others: list[tuple[str, object]]
    ) -> None:
        outcome: dict[str, object] = {}

        def call() -> None:
            response = stub.RegisterModelVersion(iter(stream), timeout=30)
            outcome["response"] = response

        code = code_of(call)
        assert code in ACCEPTABLE, code
        if code is grpc.StatusCode.OK:
            version = outcome["response"].model_version  # type: ignore[attr-defined]
            registered[version.model, version.version] = as_registered(version)
            blobs.add(version.artifact.sha256)
            if version.reference_sample.sha256:
                blobs.add(version.reference_sample.sha256)
        for method, request in others:
            code = code_of(lambda m=method, r=request: getattr(stub, m)(r, timeout=30))
            assert code in ACCEPTABLE, (method, request, code)

    exercise()
    assert registered, "no generated registration was valid: the strategies lost their bite"

    # Exactly the successful registrations are stored: no model and no version left over
    # from a rejected one, and each as it was registered.
    numbers: dict[str, list[int]] = {}
    for model, number in registered:
        numbers.setdefault(model, []).append(number)
    models = stub.ListModels(pb.ListModelsRequest(page_size=1000)).models
    assert {(m.name, m.version_count, m.latest_version) for m in models} == {
        (model, len(found), max(found)) for model, found in numbers.items()
    }
    stored = {
        (v.model, v.version): as_registered(v)
        for model in numbers
        for v in stub.ListModelVersions(
            pb.ListModelVersionsRequest(model=model, include_archived=True, page_size=1000)
        ).model_versions
    }
    assert stored == registered
    files = {
        p.parent.name + p.name
        for p in (data_dir / "artifacts" / "sha256").rglob("*")
        if p.is_file()
    }
    assert files == blobs
    assert list((data_dir / "artifacts" / "tmp").iterdir()) == []
    channel.close()
