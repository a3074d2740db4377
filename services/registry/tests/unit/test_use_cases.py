"""The registry's use cases against in-memory fakes: no broker, no database, milliseconds."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from flywheel_common.auth import Principal, acting_as
from flywheel_common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
)
from flywheel_common.settings import Role
from flywheel_registry.domain import (
    PRODUCTION,
    AliasChanged,
    Cause,
    ModelVersionArchived,
    ModelVersionPromoted,
    ModelVersionRegistered,
    NewVersion,
    RegistryEvent,
    SearchQuery,
)
from flywheel_registry.handlers import aliases, queries, versions
from flywheel_registry.handlers.registration import Digests, Part, PartKind, register
from flywheel_registry.handlers.rollbacks import RolloutRolledBack, follow_rollback
from flywheel_testing.fakes import T0

from .fakes import World, world

ARTIFACT = b"onnx:iris-v1"


@contextmanager
def as_role(role: Role, subject: str = "") -> Iterator[None]:
    with acting_as(Principal.with_role(subject or f"{role}-1", role)):
        yield


async def parts(*items: Part) -> AsyncIterator[Part]:
    for item in items:
        yield item


async def registered(
    w: World, artifact: bytes = ARTIFACT, model: str = "iris", **fields: Any
) -> int:
    new = NewVersion(model=model, **fields)
    with as_role(Role.WRITER, "trainer"):
        done = await register(w.deps, new, parts((PartKind.ARTIFACT, artifact)))
    return done.version.version.version


def kinds(events: list[RegistryEvent]) -> list[type]:
    return [type(event) for event in events]


async def test_a_registration_stores_the_artifact_by_digest_and_announces_the_version() -> None:
    w = world()
    with as_role(Role.WRITER, "trainer"):
        done = await register(
            w.deps,
            NewVersion("iris", metrics={"accuracy": 0.97}, tags={"team": "a"}),
            parts((PartKind.ARTIFACT, ARTIFACT[:5]), (PartKind.ARTIFACT, ARTIFACT[5:])),
        )
    version = done.version.version
    assert (version.version, done.replayed) == (1, False)
    assert w.blobs.blobs == {version.artifact.sha256: ARTIFACT}
    assert version.created_by == "trainer"
    assert version.created_at == T0
    assert kinds(w.store.events) == [ModelVersionRegistered]
    assert w.store.models["iris"].latest_version == 1
    assert w.blobs.open_uploads == 0


async def test_versions_are_numbered_in_order_per_model() -> None:
    w = world()
    assert [await registered(w) for _ in range(3)] == [1, 2, 3]
    assert await registered(w, model="fraud") == 1


async def test_the_same_idempotency_key_replays_the_first_registration() -> None:
    w = world()
    first = await registered(w, idempotency_key="run-42")
    with as_role(Role.WRITER):
        again = await register(
            w.deps,
            NewVersion("iris", idempotency_key="run-42"),
            parts((PartKind.ARTIFACT, b"onnx:other bytes")),
        )
    assert again.replayed
    assert again.version.version.version == first
    assert len(w.store.versions) == 1
    assert len(w.store.events) == 1
    assert len(w.blobs.blobs) == 1, "a replay stores nothing"


async def test_aliases_set_at_registration_announce_a_promotion_after_the_registration() -> None:
    w = world()
    await registered(w, aliases=(PRODUCTION, "candidate"))
    assert kinds(w.store.events) == [
        ModelVersionRegistered,
        AliasChanged,
        ModelVersionPromoted,
        AliasChanged,
    ]
    registered_event = w.store.events[0]
    assert isinstance(registered_event, ModelVersionRegistered)
    assert registered_event.aliases == ("candidate", PRODUCTION)
    assert {c.cause for c in w.store.history} == {Cause.REGISTRATION}


@pytest.mark.parametrize(
    ("new", "fragment"),
    [
        (NewVersion("Iris"), "model 'Iris' is not a valid name"),
        (NewVersion("iris", aliases=("a", "a")), "aliases must not repeat"),
        (NewVersion("iris", metrics={"loss": float("nan")}), "finite number"),
        (NewVersion("iris", lineage={"parent_version": -1}), "must not be negative"),
    ],
)
async def test_invalid_metadata_fails_before_any_byte_is_kept(
    new: NewVersion, fragment: str
) -> None:
    w = world()
    with pytest.raises(InvalidArgument, match=fragment):
        await register(w.deps, new, parts((PartKind.ARTIFACT, ARTIFACT)))
    assert (w.store.models, w.blobs.blobs, w.store.events) == ({}, {}, [])
    assert w.blobs.open_uploads == 0


async def test_an_invalid_artifact_leaves_no_model_no_version_and_no_blob() -> None:
    w = world()
    with pytest.raises(InvalidArgument, match="not a valid ONNX model"):
        await registered(w, artifact=b"garbage")
    assert (w.store.models, w.blobs.blobs, w.store.events) == ({}, {}, [])
    assert w.blobs.open_uploads == 0


async def test_an_artifact_over_the_limit_is_refused_while_it_streams() -> None:
    w = world()
    with pytest.raises(ResourceExhausted, match="limit of 1024 bytes"):
        await registered(w, artifact=b"onnx:" + b"x" * 2000)
    assert w.validator.calls == 0
    assert w.blobs.open_uploads == 0


async def test_a_digest_mismatch_keeps_nothing() -> None:
    w = world()
    with pytest.raises(InvalidArgument, match="artifact sha256 mismatch"):
        await register(
            w.deps,
            NewVersion("iris"),
            parts((PartKind.ARTIFACT, ARTIFACT), (PartKind.DIGESTS, Digests("0" * 64))),
        )
    assert (w.store.models, w.blobs.blobs) == ({}, {})


async def test_parts_out_of_order_are_refused() -> None:
    w = world()
    with pytest.raises(InvalidArgument, match="after expected_digests"):
        await register(
            w.deps,
            NewVersion("iris"),
            parts((PartKind.DIGESTS, Digests()), (PartKind.ARTIFACT, ARTIFACT)),
        )
    assert w.blobs.open_uploads == 0


async def test_a_signature_that_breaks_production_needs_breaking_change() -> None:
    w = world()
    await registered(w, aliases=(PRODUCTION,))
    events_before = len(w.store.events)
    with pytest.raises(FailedPrecondition, match="incompatible with production version 1"):
        await registered(w, artifact=b"onnx:wider")
    assert len(w.store.versions) == 1
    assert len(w.store.events) == events_before
    assert len(w.blobs.blobs) == 1, "the refused artifact's blob is gone"
    assert await registered(w, artifact=b"onnx:wider", breaking_change=True) == 2


async def test_setting_production_is_a_promotion_and_setting_it_again_changes_nothing() -> None:
    w = world()
    await registered(w)
    await registered(w)
    with as_role(Role.WRITER, "alice"):
        pointer, previous = await aliases.set_alias(
            w.deps, aliases.SetAlias("iris", PRODUCTION, 2, "better")
        )
    assert (pointer.version, pointer.updated_by, previous) == (2, "alice", 0)
    assert kinds(w.store.events[-2:]) == [AliasChanged, ModelVersionPromoted]
    promoted = w.store.events[-1]
    assert isinstance(promoted, ModelVersionPromoted)
    assert (promoted.change.actor, promoted.change.reason) == ("alice", "better")
    count = len(w.store.events)
    with as_role(Role.WRITER):
        _, previous = await aliases.set_alias(w.deps, aliases.SetAlias("iris", PRODUCTION, 2))
    assert previous == 2
    assert len(w.store.events) == count


async def test_a_stale_expected_version_fails_and_moves_nothing() -> None:
    w = world()
    await registered(w, aliases=("staging",))
    await registered(w)
    count = len(w.store.events)
    with as_role(Role.WRITER), pytest.raises(FailedPrecondition, match="read it again"):
        await aliases.set_alias(w.deps, aliases.SetAlias("iris", "staging", 2, expected_current=0))
    assert w.store.models["iris"].alias_version("staging") == 1
    assert len(w.store.events) == count


async def test_a_protected_alias_moves_only_for_an_admin() -> None:
    w = world(protected_aliases=[PRODUCTION])
    await registered(w)
    await registered(w)
    with as_role(Role.ADMIN):
        pointer, _ = await aliases.set_alias(w.deps, aliases.SetAlias("iris", PRODUCTION, 1))
    assert pointer.protected
    with as_role(Role.WRITER), pytest.raises(PermissionDenied, match="only the admin role"):
        await aliases.set_alias(w.deps, aliases.SetAlias("iris", PRODUCTION, 2))
    with as_role(Role.WRITER), pytest.raises(PermissionDenied, match="deletes it"):
        await aliases.delete_alias(w.deps, aliases.DeleteAlias("iris", PRODUCTION))
    with as_role(Role.WRITER), pytest.raises(PermissionDenied, match="whether an alias"):
        await aliases.set_alias(w.deps, aliases.SetAlias("iris", "staging", 2, protected=True))
    with as_role(Role.ADMIN):
        await aliases.set_alias(w.deps, aliases.SetAlias("iris", PRODUCTION, 2))
    assert w.store.models["iris"].alias_version(PRODUCTION) == 2


async def test_deleting_an_alias_is_announced_with_version_zero() -> None:
    w = world()
    await registered(w, aliases=("staging",))
    with as_role(Role.WRITER):
        assert await aliases.delete_alias(w.deps, aliases.DeleteAlias("iris", "staging")) == 1
        with pytest.raises(NotFound, match="has no alias 'staging'"):
            await aliases.delete_alias(w.deps, aliases.DeleteAlias("iris", "staging"))
    change = w.store.events[-1]
    assert isinstance(change, AliasChanged)
    assert (change.change.version, change.change.previous_version) == (0, 1)


async def test_archiving_removes_the_aliases_but_never_production() -> None:
    w = world()
    await registered(w, aliases=(PRODUCTION,))
    await registered(w, aliases=("staging", "canary"))
    with as_role(Role.WRITER):
        with pytest.raises(FailedPrecondition, match="is in production"):
            await versions.archive_version(w.deps, "iris", 1, "old")
        archived = await versions.archive_version(w.deps, "iris", 2, "bad")
    assert archived.archived
    assert archived.archive_reason == "bad"
    assert kinds(w.store.events[-3:]) == [AliasChanged, AliasChanged, ModelVersionArchived]
    event = w.store.events[-1]
    assert isinstance(event, ModelVersionArchived)
    assert event.removed_aliases == ("canary", "staging")
    assert set(w.store.models["iris"].aliases) == {PRODUCTION}
    with as_role(Role.WRITER):
        with pytest.raises(FailedPrecondition, match="archived already"):
            await versions.archive_version(w.deps, "iris", 2, "again")
        with pytest.raises(FailedPrecondition, match="is archived and cannot take alias"):
            await aliases.set_alias(w.deps, aliases.SetAlias("iris", "staging", 2))


async def test_updating_tags_sets_and_removes_and_refuses_too_many() -> None:
    w = world()
    await registered(w, tags={"team": "a", "stage": "dev"})
    with as_role(Role.WRITER):
        updated = await versions.update_version(
            w.deps,
            versions.UpdateVersion(
                "iris", 1, "new text", {"team": "b", "owner": "x"}, ("stage", "owner")
            ),
        )
        assert updated.version.tags == {"team": "b"}
        assert updated.version.description == "new text"
        many = {f"k{i}": "v" for i in range(1001)}
        with pytest.raises(InvalidArgument, match="at most 1000 tags"):
            await versions.update_version(w.deps, versions.UpdateVersion("iris", 1, set_tags=many))
    assert w.store.versions["iris", 1].tags == {"team": "b"}


async def test_a_rollback_moves_protected_production_back_once_per_event() -> None:
    w = world(protected_aliases=[PRODUCTION])
    await registered(w, aliases=(PRODUCTION,))
    await registered(w)
    with as_role(Role.ADMIN):
        await aliases.set_alias(w.deps, aliases.SetAlias("iris", PRODUCTION, 2))
    rollback = RolloutRolledBack("iris", 1, 2, "r-1", "errors", "deployer")
    await follow_rollback(w.deps, rollback, "registry.deployment-events", "e-1")
    await follow_rollback(w.deps, rollback, "registry.deployment-events", "e-1")
    assert w.store.models["iris"].alias_version(PRODUCTION) == 1
    assert w.store.versions["iris", 2].tags["rolled_back_rollout"] == "r-1"
    promotions = w.store.of_type(ModelVersionPromoted)
    assert len(promotions) == 3
    last = promotions[-1]
    assert isinstance(last, ModelVersionPromoted)
    assert (last.change.cause, last.change.actor, last.change.rollout_id) == (
        Cause.ROLLBACK,
        "deployer",
        "r-1",
    )


async def test_a_rollback_of_an_unknown_model_fails_and_claims_nothing() -> None:
    w = world()
    rollback = RolloutRolledBack("ghost", 1, 2, "r-1", "", "deployer")
    with pytest.raises(NotFound, match="model 'ghost' does not exist"):
        await follow_rollback(w.deps, rollback, "c", "e-1")
    assert w.store.claimed == set()


async def test_reads_say_what_is_missing() -> None:
    w = world()
    await registered(w)
    with pytest.raises(NotFound, match="has no version 7 \\(latest is 1\\)"):
        await queries.get_version(w.deps, "iris", 7)
    with pytest.raises(NotFound, match="ListModels shows the registered ones"):
        await queries.get_model(w.deps, "nope")
    with pytest.raises(InvalidArgument, match="version must be 1 or more"):
        await queries.get_version(w.deps, "iris", 0)
    with pytest.raises(NotFound, match="without a reference sample"):
        await queries.open_reference_sample(w.deps, "iris", 1)


async def test_versions_page_newest_first_and_a_token_only_fits_its_query() -> None:
    w = world()
    for _ in range(5):
        await registered(w)
    first, token = await queries.list_versions(w.deps, "iris", 2, "", False)
    second, _ = await queries.list_versions(w.deps, "iris", 2, token, False)
    assert [v.version.version for v in first + second] == [5, 4, 3, 2]
    with pytest.raises(InvalidArgument, match="different query"):
        await queries.list_versions(w.deps, "iris", 2, token, True)
    with pytest.raises(InvalidArgument, match="different query"):
        await queries.search(w.deps, SearchQuery(page_token=token))


async def test_an_artifact_streams_in_chunks_from_an_offset() -> None:
    w = world()
    await registered(w)
    version, chunks = await queries.open_artifact(w.deps, "iris", 1, 2)
    received = [chunk async for chunk in chunks]
    assert b"".join(received) == ARTIFACT[2:]
    assert max(map(len, received)) == 4
    with pytest.raises(InvalidArgument, match="offset must be between 0"):
        await queries.open_artifact(w.deps, "iris", 1, version.artifact.size + 1)


async def test_models_and_their_aliases_read_back() -> None:
    w = world()
    await registered(w, aliases=("staging",))
    await registered(w, model="fraud")
    summary = await queries.get_model(w.deps, "iris")
    assert (summary.version_count, summary.model.alias_version("staging")) == (1, 1)
    found, token = await queries.list_models(w.deps, 1, "", "")
    assert [s.model.name for s in found] == ["fraud"]
    assert token
    rest, token = await queries.list_models(w.deps, 1, token, "")
    assert [s.model.name for s in rest] == ["iris"]
    assert token == ""
    by_alias = await queries.version_by_alias(w.deps, "iris", "staging")
    assert by_alias.aliases == ("staging",)
    history, _ = await queries.alias_history(w.deps, "iris", "", 10, "")
    assert [(c.alias, c.version, c.actor) for c in history] == [("staging", 1, "trainer")]
