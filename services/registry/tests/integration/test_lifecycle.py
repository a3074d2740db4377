"""Aliases, promotion, audit trail, updates, archiving, search and paging over real gRPC."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from flywheel.deployer.v1 import events_pb2 as deployer_events
from flywheel.registry.v1 import events_pb2 as events
from flywheel.registry.v1 import registry_pb2 as pb
from flywheel.registry.v1 import types_pb2 as types
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings
from flywheel_common.testing import IrisModels, registration
from flywheel_common.topics import DEPLOYMENT_EVENTS

from .conftest import RegistryClient, RunningRegistry, model_events, register


async def versions(client: RegistryClient, model: str, iris: IrisModels, count: int) -> None:
    for i in range(count):
        await register(
            client,
            registration(
                model,
                iris.classifier,
                metrics={"accuracy": 0.9 + i / 100},
                tags={"run": str(i + 1)},
            ),
        )


async def expect_error(call: object, code: grpc.StatusCode, fragment: str = "") -> str:
    with pytest.raises(grpc.aio.AioRpcError) as failure:
        await call  # type: ignore[misc]
    assert failure.value.code() == code, failure.value.details()
    assert fragment in (failure.value.details() or "")
    return failure.value.details() or ""


async def test_promotion_moves_production_and_is_audited(
    registry: RunningRegistry, iris: IrisModels, model_name: str, kafka_bootstrap: str
) -> None:
    client = registry.client()
    await versions(client, model_name, iris, 2)
    await client.SetAlias(
        pb.SetAliasRequest(model=model_name, alias="production", version=1, reason="launch")
    )
    moved = await client.SetAlias(
        pb.SetAliasRequest(
            model=model_name, alias="production", version=2, reason="better accuracy"
        )
    )
    assert (moved.alias.version, moved.previous_version) == (2, 1)
    current = await client.GetModelVersionByAlias(
        pb.GetModelVersionByAliasRequest(model=model_name, alias="production")
    )
    assert current.model_version.version == 2
    assert list(current.model_version.aliases) == ["production"]

    history = await client.GetAliasHistory(pb.GetAliasHistoryRequest(model=model_name))
    assert [(c.alias, c.version, c.previous_version, c.reason) for c in history.changes] == [
        ("production", 2, 1, "better accuracy"),
        ("production", 1, 0, "launch"),
    ]
    assert all(c.actor.startswith("writer-") for c in history.changes)
    assert history.changes[0].cause == types.ALIAS_CHANGE_CAUSE_REQUEST

    found = await model_events(kafka_bootstrap, model_name, at_least=6)
    promoted = [e for _, e in found if isinstance(e, events.ModelVersionPromoted)]
    assert [(p.version, p.previous_version, p.reason) for p in promoted] == [
        (1, 0, "launch"),
        (2, 1, "better accuracy"),
    ]
    assert promoted[1].artifact_sha256 == current.model_version.artifact.sha256
    changed = [e for _, e in found if isinstance(e, events.AliasChanged)]
    assert [(c.alias, c.version) for c in changed] == [("production", 1), ("production", 2)]


async def test_alias_rules_compare_and_set_and_delete(
    registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    client = registry.client()
    await versions(client, model_name, iris, 2)
    await client.SetAlias(pb.SetAliasRequest(model=model_name, alias="candidate", version=1))
    await expect_error(
        client.SetAlias(
            pb.SetAliasRequest(
                model=model_name, alias="candidate", version=2, expected_current_version=2
            )
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
        "points at version 1, not the expected 2",
    )
    await client.SetAlias(
        pb.SetAliasRequest(
            model=model_name, alias="candidate", version=2, expected_current_version=1
        )
    )
    await expect_error(
        client.SetAlias(pb.SetAliasRequest(model=model_name, alias="candidate", version=9)),
        grpc.StatusCode.NOT_FOUND,
        "has no version 9",
    )
    await expect_error(
        client.SetAlias(pb.SetAliasRequest(model="no-such-model", alias="candidate", version=1)),
        grpc.StatusCode.NOT_FOUND,
        "does not exist",
    )
    deleted = await client.DeleteAlias(
        pb.DeleteAliasRequest(model=model_name, alias="candidate", reason="done")
    )
    assert deleted.previous_version == 2
    await expect_error(
        client.GetModelVersionByAlias(
            pb.GetModelVersionByAliasRequest(model=model_name, alias="candidate")
        ),
        grpc.StatusCode.NOT_FOUND,
        "has no alias 'candidate'",
    )
    history = await client.GetAliasHistory(
        pb.GetAliasHistoryRequest(model=model_name, alias="candidate")
    )
    assert [(c.version, c.previous_version) for c in history.changes] == [(0, 2), (2, 1), (1, 0)]


async def test_only_admins_move_protected_aliases(
    registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    writer, admin = registry.client("writer"), registry.client("admin")
    await versions(writer, model_name, iris, 2)
    await expect_error(
        writer.SetAlias(
            pb.SetAliasRequest(model=model_name, alias="production", version=1, protected=True)
        ),
        grpc.StatusCode.PERMISSION_DENIED,
        "only the admin role changes whether an alias is protected",
    )
    made = await admin.SetAlias(
        pb.SetAliasRequest(model=model_name, alias="production", version=1, protected=True)
    )
    assert made.alias.protected
    await expect_error(
        writer.SetAlias(pb.SetAliasRequest(model=model_name, alias="production", version=2)),
        grpc.StatusCode.PERMISSION_DENIED,
        "is protected: only the admin role moves it",
    )
    await expect_error(
        writer.DeleteAlias(pb.DeleteAliasRequest(model=model_name, alias="production")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    moved = await admin.SetAlias(
        pb.SetAliasRequest(model=model_name, alias="production", version=2)
    )
    assert moved.alias.protected
    assert moved.alias.updated_by.startswith("admin-")


async def test_update_and_archive(
    registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    client = registry.client()
    await versions(client, model_name, iris, 3)
    updated = await client.UpdateModelVersion(
        pb.UpdateModelVersionRequest(
            model=model_name,
            version=2,
            description="reviewed",
            set_tags={"owner": "ana"},
            remove_tag_keys=["run"],
        )
    )
    assert updated.model_version.description == "reviewed"
    assert dict(updated.model_version.tags) == {"owner": "ana"}

    await client.SetAlias(pb.SetAliasRequest(model=model_name, alias="production", version=1))
    await client.SetAlias(pb.SetAliasRequest(model=model_name, alias="staging", version=2))
    await expect_error(
        client.ArchiveModelVersion(pb.ArchiveModelVersionRequest(model=model_name, version=1)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "is in production",
    )
    archived = await client.ArchiveModelVersion(
        pb.ArchiveModelVersionRequest(model=model_name, version=2, reason="superseded")
    )
    assert archived.model_version.status == types.MODEL_VERSION_STATUS_ARCHIVED
    assert archived.model_version.archive_reason == "superseded"
    await expect_error(
        client.SetAlias(pb.SetAliasRequest(model=model_name, alias="candidate", version=2)),
        grpc.StatusCode.FAILED_PRECONDITION,
        "is archived and cannot take alias",
    )
    await expect_error(
        client.GetModelVersionByAlias(
            pb.GetModelVersionByAliasRequest(model=model_name, alias="staging")
        ),
        grpc.StatusCode.NOT_FOUND,
    )
    live = await client.ListModelVersions(pb.ListModelVersionsRequest(model=model_name))
    assert [v.version for v in live.model_versions] == [3, 1]
    everything = await client.ListModelVersions(
        pb.ListModelVersionsRequest(model=model_name, include_archived=True)
    )
    assert [v.version for v in everything.model_versions] == [3, 2, 1]


async def test_search_filters_orders_and_pages(
    registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    client = registry.client()
    await versions(client, model_name, iris, 6)
    await client.SetAlias(pb.SetAliasRequest(model=model_name, alias="candidate", version=5))
    by_metric = await client.SearchModelVersions(
        pb.SearchModelVersionsRequest(
            models=[model_name],
            metric_filters=[
                pb.MetricFilter(
                    metric="accuracy",
                    comparison=pb.COMPARISON_OPERATOR_GREATER_OR_EQUAL,
                    value=0.925,
                )
            ],
            order_by=[pb.SortKey(field=pb.SORT_FIELD_METRIC, metric="accuracy", descending=True)],
        )
    )
    assert [v.version for v in by_metric.model_versions] == [6, 5, 4]
    by_tag = await client.SearchModelVersions(
        pb.SearchModelVersionsRequest(models=[model_name], tags={"run": "2"})
    )
    assert [v.version for v in by_tag.model_versions] == [2]
    by_alias = await client.SearchModelVersions(
        pb.SearchModelVersionsRequest(models=[model_name], aliases=["candidate"])
    )
    assert [(v.version, list(v.aliases)) for v in by_alias.model_versions] == [(5, ["candidate"])]
    future = Timestamp(seconds=4_000_000_000)
    assert not (
        await client.SearchModelVersions(
            pb.SearchModelVersionsRequest(models=[model_name], created_after=future)
        )
    ).model_versions

    pages: list[int] = []
    request = pb.SearchModelVersionsRequest(
        models=[model_name], page_size=4, order_by=[pb.SortKey(field=pb.SORT_FIELD_VERSION)]
    )
    while True:
        page = await client.SearchModelVersions(request)
        pages += [v.version for v in page.model_versions]
        if not page.next_page_token:
            break
        request.page_token = page.next_page_token
    assert pages == [1, 2, 3, 4, 5, 6]
    request.tags["run"] = "1"
    await expect_error(
        client.SearchModelVersions(request), grpc.StatusCode.INVALID_ARGUMENT, "different query"
    )


async def test_lists_page_with_tokens(
    registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    client = registry.client()
    for suffix in ("a", "b", "c"):
        await register(client, registration(f"{model_name}-{suffix}", iris.classifier))
    await versions(client, f"{model_name}-a", iris, 4)
    first = await client.ListModels(pb.ListModelsRequest(name_prefix=model_name, page_size=2))
    second = await client.ListModels(
        pb.ListModelsRequest(name_prefix=model_name, page_size=2, page_token=first.next_page_token)
    )
    assert [m.name for m in [*first.models, *second.models]] == [
        f"{model_name}-a",
        f"{model_name}-b",
        f"{model_name}-c",
    ]
    assert not second.next_page_token
    assert first.models[0].version_count == 5
    page = await client.ListModelVersions(
        pb.ListModelVersionsRequest(model=f"{model_name}-a", page_size=3)
    )
    rest = await client.ListModelVersions(
        pb.ListModelVersionsRequest(
            model=f"{model_name}-a", page_size=3, page_token=page.next_page_token
        )
    )
    assert [v.version for v in [*page.model_versions, *rest.model_versions]] == [5, 4, 3, 2, 1]
    await expect_error(
        client.ListModelVersions(
            pb.ListModelVersionsRequest(model=f"{model_name}-a", page_token="garbage")
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "page_token",
    )


async def test_rollback_events_move_production_back_once(
    registry: RunningRegistry, iris: IrisModels, model_name: str, kafka_bootstrap: str
) -> None:
    client = registry.client()
    await versions(client, model_name, iris, 2)
    await client.SetAlias(pb.SetAliasRequest(model=model_name, alias="production", version=1))
    await client.SetAlias(pb.SetAliasRequest(model=model_name, alias="production", version=2))
    publisher = EventPublisher(
        KafkaSettings(bootstrap_servers=kafka_bootstrap), source="flywheel-deployer"
    )
    await publisher.start()
    rollback = deployer_events.RolloutRolledBack(
        rollout_id="r-7",
        model=model_name,
        rolled_back_version=2,
        restored_version=1,
        automatic=True,
        actor="deployer",
        reason="error rate 12% > 5%",
    )
    sent = await publisher.publish(DEPLOYMENT_EVENTS, rollback, subject=model_name)
    await publisher.send([sent])  # the same event again, same ce_id: must apply once
    await publisher.stop()

    async with asyncio.timeout(60):
        while True:
            current = await client.GetModelVersionByAlias(
                pb.GetModelVersionByAliasRequest(model=model_name, alias="production")
            )
            if current.model_version.version == 1:
                break
            await asyncio.sleep(0.1)
    bad = await client.GetModelVersion(pb.GetModelVersionRequest(model=model_name, version=2))
    assert bad.model_version.tags["rolled_back_reason"] == "error rate 12% > 5%"
    assert bad.model_version.tags["rolled_back_rollout"] == "r-7"
    await asyncio.sleep(1.0)  # the duplicate would land now
    history = await client.GetAliasHistory(
        pb.GetAliasHistoryRequest(model=model_name, alias="production")
    )
    rollbacks = [c for c in history.changes if c.cause == types.ALIAS_CHANGE_CAUSE_ROLLBACK]
    assert [(c.version, c.previous_version, c.actor, c.rollout_id) for c in rollbacks] == [
        (1, 2, "deployer", "r-7")
    ]
    found = await model_events(kafka_bootstrap, model_name, at_least=7)
    promoted = [e for _, e in found if isinstance(e, events.ModelVersionPromoted)]
    assert promoted[-1].cause == types.ALIAS_CHANGE_CAUSE_ROLLBACK
    assert promoted[-1].version == 1
