"""Two registry replicas on one PostgreSQL: each serves every RPC and reads every artifact;
the outbox is relayed by the lease holder, and handed over when it stops."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from flywheel.registry.v1 import registry_pb2 as pb
from flywheel_common.registration import registration
from flywheel_registry.app import build
from flywheel_testing.backends import reset_postgres
from flywheel_testing.models import IrisModels
from flywheel_testing.platform import TEST_LEASE
from flywheel_testing.tls import secure_channel

from .conftest import RunningRegistry, drain, model_events, register, registry_settings

pytestmark = pytest.mark.integration


async def start_replica(
    stack: contextlib.AsyncExitStack, url: str, kafka_bootstrap: str, data_dir: Path, group: str
) -> tuple[RunningRegistry, Callable[[], Awaitable[None]]]:
    """A replica on the shared database; the callable stops it early (once)."""
    settings = registry_settings(
        url, kafka_bootstrap, data_dir, artifact_store="database", lease=TEST_LEASE
    ).model_copy(update={"consumer_group": group})
    service = build(settings)
    await service.start()
    stopped = False

    async def stop() -> None:
        nonlocal stopped
        if not stopped:
            stopped = True
            await service.stop()

    stack.push_async_callback(stop)
    channel = await stack.enter_async_context(secure_channel(service.grpc.address))
    return RunningRegistry(service, settings, channel), stop


async def test_replicas_share_artifacts_and_hand_the_relay_over(
    postgres_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
    iris_models: IrisModels,
    model_name: str,
) -> None:
    await reset_postgres(postgres_url)
    group = f"registry-test-{uuid.uuid4().hex[:8]}"
    artifact = iris_models.classifier
    async with contextlib.AsyncExitStack() as stack:
        # b starts first and takes the lease: it relays, a stands by.
        b, stop_b = await start_replica(stack, postgres_url, kafka_bootstrap, tmp_path / "b", group)
        a, _ = await start_replica(stack, postgres_url, kafka_bootstrap, tmp_path / "a", group)
        await register(a.client(), registration(model_name, artifact))
        download = await drain(
            b.client("reader").GetArtifact(pb.GetArtifactRequest(model=model_name, version=1))
        )
        assert b"".join(m.chunk for m in download) == artifact
        assert download[0].artifact.sha256 == hashlib.sha256(artifact).hexdigest()
        await b.client().SetAlias(
            pb.SetAliasRequest(model=model_name, alias="candidate", version=1)
        )
        assert len(await model_events(kafka_bootstrap, model_name, at_least=2)) == 2

        await register(a.client(), registration(model_name, iris_models.retrained))
        await stop_b()  # the leader stops cleanly and releases its lease: a relays now
        await a.client().SetAlias(pb.SetAliasRequest(model=model_name, alias="champion", version=2))
        events = await model_events(kafka_bootstrap, model_name, at_least=4)
    assert not list(tmp_path.rglob("*.part"))  # no spooled upload left behind  # noqa: ASYNC240
    ids = [event_id for event_id, _ in events]
    assert len(ids) == 4
    assert len(set(ids)) == 4  # each event once, whoever relayed it
    kinds = [type(message).__name__ for _, message in events]
    assert kinds.count("ModelVersionRegistered") == 2
