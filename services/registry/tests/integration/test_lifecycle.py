"""Aliases, promotion, audit trail, updates, archiving, search and paging over real gRPC."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from flywheel.deployer.v1 import events_pb2 as deployer_events
from flywheel.registry.v1 import events_pb2 as events
from flywheel.registry.v1 import registry_pb2 as pb
from flywheel.registry.v1 import types_pb2 as types
from flywheel_common.publisher import EventPublisher
from flywheel_common.registration import registration
from flywheel_common.settings import KafkaSettings
from flywheel_common.topics import DEPLOYMENT_EVENTS
from flywheel_testing.models import IrisModels
from flywheel_testing.waiting import eventually

from .conftest import (
    RegistryClient,
    RunningRegistry,
    drain,
    expect_error,
    model_events,
    register,
)


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


async def test_promotion_moves_production_and_is_audited(
    shared_registry: RunningRegistry, iris: IrisModels, model_name: str, kafka_bootstrap: str
) -> None:
    client = shared_registry.client()
    await versions(client, model_name, iris, 2)
    before_launch = datetime.now(UTC)
    await client.SetAlias(
        pb.SetAliasRequest(model=model_name, alias="production", version=1, reason="launch")
    )
    before_move = datetime.now(UTC)
    moved = await client.SetAlias(
        pb.SetAliasRequest(
            model=model_name, alias="production", version=2, reason="better accuracy"
        )
    )
    after_move = datetime.now(UTC)
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
    assert all(c.HasField("changed_at") for c in history.changes)
    moved_at, launched_at = (c.changed_at.ToDatetime(tzinfo=UTC) for c in history.changes)
    assert before_launch <= launched_at <= before_move <= moved_at <= after_move
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
    shared_registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    client = shared_registry.client()
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
    shared_registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    writer, admin = shared_registry.client("writer"), shared_registry.client("admin")
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
    shared_registry: RunningRegistry, iris: IrisModels, model_name: str, kafka_bootstrap: str
) -> None:
    client = shared_registry.client()
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

    # Archiving took `staging` away: audited, and announced before the archive itself.
    history = await client.GetAliasHistory(
        pb.GetAliasHistoryRequest(model=model_name, alias="staging")
    )
    assert [(c.version, c.previous_version, c.reason) for c in history.changes] == [
        (0, 2, "archived: superseded"),
        (2, 0, ""),
    ]
    found = [e for _, e in await model_events(kafka_bootstrap, model_name, at_least=8)]
    assert [type(e) for e in found] == [
        *[events.ModelVersionRegistered] * 3,
        events.AliasChanged,  # production -> 1
        events.ModelVersionPromoted,
        events.AliasChanged,  # staging -> 2
        events.AliasChanged,  # staging removed by the archive
        events.ModelVersionArchived,
    ]
    dropped, archived_event = found[-2:]
    assert isinstance(dropped, events.AliasChanged)
    assert (dropped.alias, dropped.version, dropped.previous_version, dropped.reason) == (
        "staging",
        0,
        2,
        "archived: superseded",
    )
    assert isinstance(archived_event, events.ModelVersionArchived)
    assert (archived_event.model, archived_event.version, archived_event.reason) == (
        model_name,
        2,
        "superseded",
    )
    assert list(archived_event.removed_aliases) == ["staging"]
    assert archived_event.artifact_sha256 == archived.model_version.artifact.sha256
    assert archived_event.actor.startswith("writer-")
    assert archived_event.occurred_at == archived.model_version.archived_at


async def test_unknown_models_versions_and_aliases_are_not_found(
    shared_registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    writer, reader = shared_registry.client("writer"), shared_registry.client("reader")
    await register(writer, registration(model_name, iris.classifier))  # version 1, no sample
    missing = f"{model_name}-missing"
    no_model = f"model {missing!r} does not exist; ListModels shows the registered ones"
    no_version = f"model {model_name!r} has no version 2 (latest is 1)"
    calls: list[tuple[Callable[[], Awaitable[object]], str]] = [
        (lambda: reader.GetModel(pb.GetModelRequest(name=missing)), no_model),
        (
            lambda: reader.GetModelVersion(pb.GetModelVersionRequest(model=missing, version=1)),
            no_model,
        ),
        (
            lambda: reader.GetModelVersion(pb.GetModelVersionRequest(model=model_name, version=2)),
            no_version,
        ),
        (
            lambda: drain(reader.GetArtifact(pb.GetArtifactRequest(model=missing, version=1))),
            no_model,
        ),
        (
            lambda: drain(reader.GetArtifact(pb.GetArtifactRequest(model=model_name, version=2))),
            no_version,
        ),
        (
            lambda: drain(
                reader.GetReferenceSample(pb.GetReferenceSampleRequest(model=missing, version=1))
            ),
            no_model,
        ),
        (
            lambda: drain(
                reader.GetReferenceSample(pb.GetReferenceSampleRequest(model=model_name, version=2))
            ),
            no_version,
        ),
        (
            lambda: drain(
                reader.GetReferenceSample(pb.GetReferenceSampleRequest(model=model_name, version=1))
            ),
            f"model {model_name!r} version 1 was registered without a reference sample",
        ),
        (
            lambda: writer.ArchiveModelVersion(
                pb.ArchiveModelVersionRequest(model=missing, version=1, reason="cleanup")
            ),
            no_model,
        ),
        (
            lambda: writer.ArchiveModelVersion(
                pb.ArchiveModelVersionRequest(model=model_name, version=2, reason="cleanup")
            ),
            no_version,
        ),
        (
            lambda: reader.GetModelVersionByAlias(
                pb.GetModelVersionByAliasRequest(model=missing, alias="production")
            ),
            no_model,
        ),
        (
            lambda: reader.GetModelVersionByAlias(
                pb.GetModelVersionByAliasRequest(model=model_name, alias="production")
            ),
            f"model {model_name!r} has no alias 'production'",
        ),
    ]
    for call, fragment in calls:
        await expect_error(call(), grpc.StatusCode.NOT_FOUND, fragment)
    listed = await reader.ListModels(pb.ListModelsRequest(name_prefix=model_name))
    assert [(m.name, m.latest_version) for m in listed.models] == [(model_name, 1)]


async def test_readers_read_but_cannot_change(
    shared_registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    writer, reader = shared_registry.client("writer"), shared_registry.client("reader")
    await register(
        writer,
        registration(model_name, iris.classifier, aliases=["candidate"], tags={"team": "ml"}),
    )
    before = await writer.GetModelVersion(pb.GetModelVersionRequest(model=model_name, version=1))

    model = await reader.GetModel(pb.GetModelRequest(name=model_name))
    assert (model.model.name, model.model.latest_version) == (model_name, 1)
    listed = await reader.ListModelVersions(pb.ListModelVersionsRequest(model=model_name))
    assert list(listed.model_versions) == [before.model_version]
    chunks = await drain(reader.GetArtifact(pb.GetArtifactRequest(model=model_name, version=1)))
    assert b"".join(c.chunk for c in chunks) == iris.classifier

    changes: list[tuple[str, Callable[[], Awaitable[object]]]] = [
        (
            "SetAlias",
            lambda: reader.SetAlias(
                pb.SetAliasRequest(model=model_name, alias="production", version=1)
            ),
        ),
        (
            "DeleteAlias",
            lambda: reader.DeleteAlias(pb.DeleteAliasRequest(model=model_name, alias="candidate")),
        ),
        (
            "UpdateModelVersion",
            lambda: reader.UpdateModelVersion(
                pb.UpdateModelVersionRequest(
                    model=model_name, version=1, description="mine", remove_tag_keys=["team"]
                )
            ),
        ),
        (
            "ArchiveModelVersion",
            lambda: reader.ArchiveModelVersion(
                pb.ArchiveModelVersionRequest(model=model_name, version=1, reason="mine")
            ),
        ),
    ]
    for method, change in changes:
        await expect_error(
            change(),
            grpc.StatusCode.PERMISSION_DENIED,
            f"{method} needs role writer",
        )
    after = await writer.GetModelVersion(pb.GetModelVersionRequest(model=model_name, version=1))
    assert after.model_version == before.model_version  # same aliases, tags, status
    history = await writer.GetAliasHistory(pb.GetAliasHistoryRequest(model=model_name))
    assert [(c.alias, c.version) for c in history.changes] == [("candidate", 1)]


async def test_search_by_creation_time(
    shared_registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    client = shared_registry.client()
    other = f"{model_name}-other"
    registered = [(model_name, 1), (other, 1), (model_name, 2)]
    for model, _ in registered:
        await register(client, registration(model, iris.classifier))
    stamps = [
        (
            await client.GetModelVersion(pb.GetModelVersionRequest(model=model, version=version))
        ).model_version.created_at
        for model, version in registered
    ]
    times = [stamp.ToDatetime(tzinfo=UTC) for stamp in stamps]
    assert times[0] < times[1] < times[2], "created_at follows the order of registration"

    async def search(
        created_after: Timestamp | None = None,
        created_before: Timestamp | None = None,
        order_by: Sequence[pb.SortKey] = (),
    ) -> list[tuple[str, int]]:
        found = await client.SearchModelVersions(
            pb.SearchModelVersionsRequest(
                models=[model_name, other],
                created_after=created_after,
                created_before=created_before,
                order_by=order_by,
            )
        )
        return [(v.model, v.version) for v in found.model_versions]

    assert await search() == registered[::-1]  # newest first, across models
    oldest_first = [pb.SortKey(field=pb.SORT_FIELD_CREATED_AT)]
    assert await search(order_by=oldest_first) == registered
    # created_after includes its instant and created_before excludes it, so the stored
    # creation times split the versions exactly.
    assert await search(created_after=stamps[1]) == [(model_name, 2), (other, 1)]
    assert await search(created_before=stamps[1]) == [(model_name, 1)]
    assert await search(created_after=stamps[1], created_before=stamps[2]) == [(other, 1)]
    assert await search(created_after=stamps[2], created_before=stamps[2]) == []


async def test_search_filters_orders_and_pages(
    shared_registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    client = shared_registry.client()
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
    shared_registry: RunningRegistry, iris: IrisModels, model_name: str
) -> None:
    client = shared_registry.client()
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


async def test_rollback_events_move_production_back_once_per_event_id(
    shared_registry: RunningRegistry, iris: IrisModels, model_name: str, kafka_bootstrap: str
) -> None:
    client = shared_registry.client()
    await versions(client, model_name, iris, 2)
    await client.SetAlias(pb.SetAliasRequest(model=model_name, alias="production", version=1))
    await client.SetAlias(pb.SetAliasRequest(model=model_name, alias="production", version=2))
    publisher = EventPublisher(
        KafkaSettings(bootstrap_servers=kafka_bootstrap), source="flywheel-deployer"
    )
    await publisher.start()

    async def rolled_back_by(rollout_id: str) -> bool:
        bad: pb.GetModelVersionResponse = await client.GetModelVersion(
            pb.GetModelVersionRequest(model=model_name, version=2)
        )
        return bad.model_version.tags.get("rolled_back_rollout") == rollout_id

    def rollback(rollout_id: str) -> deployer_events.RolloutRolledBack:
        return deployer_events.RolloutRolledBack(
            rollout_id=rollout_id,
            model=model_name,
            rolled_back_version=2,
            restored_version=1,
            automatic=True,
            actor="deployer",
            reason="error rate 12% > 5%",
        )

    try:
        sent = await publisher.publish(DEPLOYMENT_EVENTS, rollback("r-7"), subject=model_name)
        await eventually(lambda: rolled_back_by("r-7"))
        current = await client.GetModelVersionByAlias(
            pb.GetModelVersionByAliasRequest(model=model_name, alias="production")
        )
        assert current.model_version.version == 1
        bad = await client.GetModelVersion(pb.GetModelVersionRequest(model=model_name, version=2))
        assert bad.model_version.tags["rolled_back_reason"] == "error rate 12% > 5%"

        # An operator promotes 2 again; then the same event arrives once more (same ce_id),
        # followed by a new rollback event on the same partition, which is handled after it.
        await client.SetAlias(
            pb.SetAliasRequest(model=model_name, alias="production", version=2, reason="fixed")
        )
        await publisher.send([sent])
        await publisher.publish(DEPLOYMENT_EVENTS, rollback("r-8"), subject=model_name)
        await eventually(lambda: rolled_back_by("r-8"))
    finally:
        await publisher.stop()

    history = await client.GetAliasHistory(
        pb.GetAliasHistoryRequest(model=model_name, alias="production")
    )
    # The redelivered r-7 changed nothing: production stayed at 2 until r-8 moved it.
    assert [(c.version, c.previous_version, c.cause, c.rollout_id) for c in history.changes] == [
        (1, 2, types.ALIAS_CHANGE_CAUSE_ROLLBACK, "r-8"),
        (2, 1, types.ALIAS_CHANGE_CAUSE_REQUEST, ""),
        (1, 2, types.ALIAS_CHANGE_CAUSE_ROLLBACK, "r-7"),
        (2, 1, types.ALIAS_CHANGE_CAUSE_REQUEST, ""),
        (1, 0, types.ALIAS_CHANGE_CAUSE_REQUEST, ""),
    ]
    assert history.changes[2].actor == "deployer"
    found = await model_events(kafka_bootstrap, model_name, at_least=12)
    promoted = [e for _, e in found if isinstance(e, events.ModelVersionPromoted)]
    assert [(p.version, p.cause, p.rollout_id) for p in promoted] == [
        (1, types.ALIAS_CHANGE_CAUSE_REQUEST, ""),
        (2, types.ALIAS_CHANGE_CAUSE_REQUEST, ""),
        (1, types.ALIAS_CHANGE_CAUSE_ROLLBACK, "r-7"),
        (2, types.ALIAS_CHANGE_CAUSE_REQUEST, ""),
        (1, types.ALIAS_CHANGE_CAUSE_ROLLBACK, "r-8"),
    ]
