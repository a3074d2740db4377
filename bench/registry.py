"""Benchmark: the registry over real gRPC, each figure beside a reference from the same run.

    make bench-registry      # starts Kafka if needed
    uv run python bench/registry.py --registrations 60 --artifact-mb 32

- registration throughput (sequential and 8 concurrent clients) next to validating the same
  model in-process (the floor: checker + onnxruntime load, no gRPC, storage or events);
- GetArtifact MB/s next to reading the same file from the local disk in 1 MiB chunks;
- ListModelVersions latency (first page of 100, newest first) with 10,000 versions next to
  the same call with 10 versions.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
from harness import quantile
from onnx import TensorProto, helper
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sqlalchemy import select

from flywheel.registry.v1 import registry_pb2 as pb
from flywheel.registry.v1 import registry_pb2_grpc as pb_grpc
from flywheel_common.db import Database
from flywheel_common.settings import (
    AuthSettings,
    DatabaseSettings,
    KafkaSettings,
    TelemetrySettings,
)
from flywheel_registry.app import build
from flywheel_registry.onnx_validation import validate_onnx
from flywheel_registry.settings import RegistrySettings
from flywheel_registry.storage import ModelRow, VersionRow
from flywheel_sdk import to_onnx
from flywheel_testing.tls import grpc_settings, secure_channel


def iris_model() -> bytes:
    features, labels = load_iris(return_X_y=True)
    return to_onnx(
        LogisticRegression(max_iter=500).fit(features.astype(np.float32), labels), 4
    ).onnx


def large_model(megabytes: int) -> bytes:
    """One MatMul whose weights make the file `megabytes` large."""
    rows = 1024
    cols = megabytes * 1024 * 1024 // (4 * rows)
    weights = np.random.default_rng(0).standard_normal((rows, cols), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, cols])],
        [onnx.numpy_helper.from_array(weights, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def stream(model: str, artifact: bytes) -> AsyncIterator[pb.RegisterModelVersionRequest]:
    async def messages() -> AsyncIterator[pb.RegisterModelVersionRequest]:
        yield pb.RegisterModelVersionRequest(metadata=pb.RegistrationMetadata(model=model))
        for start in range(0, len(artifact), 1 << 20):
            yield pb.RegisterModelVersionRequest(artifact_chunk=artifact[start : start + (1 << 20)])
        yield pb.RegisterModelVersionRequest(
            expected_digests=pb.ExpectedDigests(
                artifact_sha256=hashlib.sha256(artifact).hexdigest()
            )
        )

    return messages()


async def registrations_per_second(
    stub: pb_grpc.RegistryServiceStub, model: str, artifact: bytes, count: int, clients: int
) -> float:
    queue = list(range(count))

    async def client() -> None:
        while queue:
            queue.pop()
            await stub.RegisterModelVersion(stream(model, artifact))

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return count / (time.perf_counter() - started)


def validations_per_second(artifact: bytes, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        validate_onnx(artifact)
    return count / (time.perf_counter() - started)


async def download_mb_per_second(
    stub: pb_grpc.RegistryServiceStub, model: str, size: int, rounds: int
) -> float:
    started = time.perf_counter()
    for _ in range(rounds):
        received = 0
        async for message in stub.GetArtifact(pb.GetArtifactRequest(model=model, version=1)):
            received += len(message.chunk)
        assert received == size
    return size * rounds / (time.perf_counter() - started) / 1e6


def disk_mb_per_second(path: Path, rounds: int) -> float:
    size = path.stat().st_size
    started = time.perf_counter()
    for _ in range(rounds):
        with path.open("rb") as handle:
            while handle.read(1 << 20):
                pass
    return size * rounds / (time.perf_counter() - started) / 1e6


async def seed_versions(database_url: str, model: str, template: VersionRow, count: int) -> None:
    """Insert versions straight into the tables: registering 10,000 over gRPC would
    benchmark validation, not listing."""
    database = Database(database_url)
    now = datetime.now(UTC)
    async with database.transaction() as session:
        row = ModelRow(
            name=model, description="", latest_version=count, created_at=now, updated_at=now
        )
        session.add(row)
        await session.flush()
        for number in range(1, count + 1):
            session.add(
                VersionRow(
                    model_id=row.id,
                    model_name=model,
                    version=number,
                    signature=template.signature,
                    artifact_sha256=template.artifact_sha256,
                    artifact_size=template.artifact_size,
                    onnx_ir_version=template.onnx_ir_version,
                    onnx_opset_version=template.onnx_opset_version,
                    params={"C": "1.0"},
                    lineage={},
                    created_by="bench",
                    created_at=now,
                    updated_at=now,
                )
            )
    await database.stop()


async def list_latencies_ms(
    stub: pb_grpc.RegistryServiceStub, model: str, calls: int
) -> list[float]:
    latencies = []
    for _ in range(calls):
        started = time.perf_counter()
        response = await stub.ListModelVersions(
            pb.ListModelVersionsRequest(model=model, page_size=100)
        )
        latencies.append((time.perf_counter() - started) * 1000)
        assert response.model_versions
    return latencies


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--bootstrap", default="127.0.0.1:19092")
    parser.add_argument("--registrations", type=int, default=60)
    parser.add_argument("--artifact-mb", type=int, default=32)
    parser.add_argument("--versions", type=int, default=10_000)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        database_url = f"sqlite+aiosqlite:///{data_dir / 'registry.db'}"
        settings = RegistrySettings(
            grpc=grpc_settings(port=0, max_message_bytes=64 * 1024 * 1024),
            kafka=KafkaSettings(bootstrap_servers=args.bootstrap),
            telemetry=TelemetrySettings(metrics_port=-1, log_level="WARNING"),
            database=DatabaseSettings(url=database_url),
            data_dir=data_dir,
            auth=AuthSettings(allow_anonymous=True),
        )
        service = build(settings)
        await service.start()
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        async with secure_channel(service.grpc.address, options=options) as channel:
            stub = pb_grpc.RegistryServiceStub(channel)
            iris = iris_model()
            await stub.RegisterModelVersion(stream("warmup", iris))
            sequential = await registrations_per_second(stub, "seq", iris, args.registrations, 1)
            concurrent = await registrations_per_second(stub, "conc", iris, args.registrations, 8)
            floor = validations_per_second(iris, args.registrations)

            big = large_model(args.artifact_mb)
            registered = await stub.RegisterModelVersion(stream("large", big))
            sha = registered.model_version.artifact.sha256
            blob = settings.artifact_folder() / "sha256" / sha[:2] / sha[2:]
            disk_mb_per_second(blob, 1)  # warm the page cache for both sides alike
            grpc_mb = await download_mb_per_second(stub, "large", len(big), 5)
            disk_mb = disk_mb_per_second(blob, 5)

            async with Database(database_url).transaction() as session:
                row = await session.scalar(
                    select(VersionRow).where(VersionRow.model_name == "warmup")
                )
            assert row is not None
            await seed_versions(database_url, "many", row, args.versions)
            await seed_versions(database_url, "few", row, 10)
            await list_latencies_ms(stub, "many", 5)
            many = await list_latencies_ms(stub, "many", 100)
            few = await list_latencies_ms(stub, "few", 100)
        await service.stop()

    print(
        f"\nregistry: {args.registrations} registrations of a {len(iris)} B iris model, "
        f"{args.artifact_mb} MB artifact, {args.versions} versions"
    )
    print(f"{'metric':<44}{'flywheel':>12}{'reference':>12}{'ratio':>8}  reference")
    rows = [
        ("registrations/s, 1 client", sequential, floor, "validate in-process"),
        ("registrations/s, 8 clients", concurrent, floor, "validate in-process"),
        ("GetArtifact MB/s", grpc_mb, disk_mb, "read file from disk"),
        (
            f"ListModelVersions p50 ms, {args.versions} versions",
            quantile(many, 0.5),
            quantile(few, 0.5),
            "same call, 10 versions",
        ),
        (
            f"ListModelVersions p99 ms, {args.versions} versions",
            quantile(many, 0.99),
            quantile(few, 0.99),
            "same call, 10 versions",
        ),
    ]
    for label, ours, reference, what in rows:
        print(f"{label:<44}{ours:>12.2f}{reference:>12.2f}{ours / reference:>8.2f}  {what}")


if __name__ == "__main__":
    asyncio.run(main())
