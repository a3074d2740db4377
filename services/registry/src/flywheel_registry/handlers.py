"""The registry's use cases: register, read, label, archive and serve model versions."""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from flywheel_common.auth import current_principal
from flywheel_common.db import Database
from flywheel_common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
)
from flywheel_common.outbox import Outbox
from flywheel_common.settings import Role
from flywheel_common.signatures import Signature
from flywheel_common.topics import MODEL_EVENTS
from flywheel_registry import converters, storage
from flywheel_registry.artifacts import BlobStore, BlobUpload
from flywheel_registry.domain import (
    PRODUCTION,
    ReferenceSampleLayout,
    check_compatible_with_production,
    check_key,
    check_name,
    check_sha256,
    check_text,
    check_version,
    decode_page_token,
    encode_page_token,
    page_size,
    query_fingerprint,
)
from flywheel_registry.onnx_validation import OnnxValidator
from flywheel_registry.search import SearchQuery
from flywheel_registry.storage import (
    AliasHistoryRow,
    AliasRow,
    MetricRow,
    ModelRow,
    TagRow,
    VersionRow,
)

MAX_MAP_ENTRIES = 1000


class Cause(StrEnum):
    REQUEST = "request"
    REGISTRATION = "registration"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class NewVersion:
    """What a registration says about the version, before its bytes arrive."""

    model: str
    description: str = ""
    model_description: str = ""
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    idempotency_key: str = ""
    breaking_change: bool = False
    reference_sample: ReferenceSampleLayout | None = None
    aliases: tuple[str, ...] = ()

    def check(self) -> None:
        check_name("model", self.model)
        for alias in self.aliases:
            check_name("alias", alias)
        if len(set(self.aliases)) != len(self.aliases):
            raise InvalidArgument("aliases must not repeat")
        for name, number in self.metrics.items():
            check_key("metrics", name)
            if not math.isfinite(number):
                raise InvalidArgument(f"metric {name!r} must be a finite number, not {number}")
        for what, texts in (("params", self.params), ("tags", self.tags)):
            for key, text in texts.items():
                check_key(what, key)
                check_text(f"{what}[{key[:40]!r}]", text)
        for what, size in (
            ("params", len(self.params)),
            ("metrics", len(self.metrics)),
            ("tags", len(self.tags)),
        ):
            if size > MAX_MAP_ENTRIES:
                raise InvalidArgument(f"at most {MAX_MAP_ENTRIES} {what} per version")
        check_text("description", self.description)
        check_text("model_description", self.model_description)
        check_text("idempotency_key", self.idempotency_key, 256)
        for name, value in self.lineage.items():
            if isinstance(value, str):
                check_text(f"lineage.{name}", value, 2048)
        if self.reference_sample is not None:
            for name in (*self.reference_sample.feature_names, self.reference_sample.input_name):
                check_text("reference sample feature or input name", name, 256)
        check_sha256("lineage.dataset_sha256", str(self.lineage.get("dataset_sha256", "")))
        if int(self.lineage.get("parent_version", 0)) < 0:
            raise InvalidArgument("lineage.parent_version must not be negative")


class PartKind(StrEnum):
    ARTIFACT = "artifact_chunk"
    SAMPLE = "reference_sample_chunk"
    DIGESTS = "expected_digests"


@dataclass(frozen=True)
class Digests:
    artifact_sha256: str = ""
    reference_sample_sha256: str = ""


Part = tuple[PartKind, "bytes | Digests"]


@dataclass(frozen=True)
class RegistryLimits:
    max_artifact_bytes: int
    max_reference_sample_bytes: int
    default_protected_aliases: frozenset[str] = frozenset()
    chunk_bytes: int = 1 << 20


@dataclass
class Registration:
    version: VersionRow
    aliases: list[str]
    replayed: bool


@dataclass
class _Uploads:
    artifact: BlobUpload
    sample: BlobUpload | None = None
    digests: Digests = field(default_factory=Digests)


class _Replay(Exception):
    """Raised inside the registration transaction to roll it back and replay a version."""

    def __init__(self, version_id: int) -> None:
        self.version_id = version_id


def _utcnow() -> datetime:
    return datetime.now(UTC)


class Registry:
    def __init__(
        self,
        database: Database,
        blobs: BlobStore,
        outbox: Outbox,
        validator: OnnxValidator,
        limits: RegistryLimits,
        clock: Callable[[], datetime] = _utcnow,
    ) -> None:
        self._db = database
        self._blobs = blobs
        self._outbox = outbox
        self._validator = validator
        self._limits = limits
        self._now = clock

    # ----------------------------------------------------------------- registration

    async def register(self, new: NewVersion, parts: AsyncIterator[Part]) -> Registration:
        new.check()
        if new.idempotency_key:
            replay = await self._replay(new.model, new.idempotency_key)
            if replay is not None:
                return replay
        uploads = await self._receive(new, parts)
        created_blobs: list[str] = []
        try:
            validated = await self._validator.validate(await uploads.artifact.read_all())
            if new.reference_sample is not None:
                new.reference_sample.check(validated.signature)
                new.reference_sample.check_received(uploads.sample.size if uploads.sample else 0)
            self._check_digests(uploads)
            for upload in (uploads.artifact, uploads.sample):
                if upload is not None and await upload.commit():
                    created_blobs.append(upload.sha256())
            try:
                return await self._commit_registration(new, uploads, validated)
            except _Replay as replay:
                return await self._load_registration(replay.version_id, replayed=True)
        except BaseException:
            for upload in (uploads.artifact, uploads.sample):
                if upload is not None:
                    await upload.discard()
            await self._drop_unreferenced(created_blobs)
            raise

    async def _replay(self, model: str, key: str) -> Registration | None:
        async with self._db.transaction() as session:
            row = await storage.find_by_idempotency_key(session, model, key)
            if row is None:
                return None
            aliases = (await storage.aliases_by_version(session, row.model_id)).get(row.version, [])
            return Registration(row, aliases, replayed=True)

    async def _receive(self, new: NewVersion, parts: AsyncIterator[Part]) -> _Uploads:
        uploads = _Uploads(self._blobs.upload(self._limits.max_artifact_bytes, "artifact"))
        stage = PartKind.ARTIFACT
        order = list(PartKind)
        try:
            async for kind, payload in parts:
                if order.index(kind) < order.index(stage):
                    raise InvalidArgument(
                        f"{kind} after {stage}: send the artifact, then the reference sample, "
                        "then expected_digests"
                    )
                if kind is PartKind.DIGESTS and stage is PartKind.DIGESTS:
                    raise InvalidArgument("expected_digests must be sent at most once")
                stage = kind
                if kind is PartKind.ARTIFACT:
                    assert isinstance(payload, bytes)
                    await uploads.artifact.write(payload)
                elif kind is PartKind.SAMPLE:
                    assert isinstance(payload, bytes)
                    if new.reference_sample is None:
                        raise InvalidArgument(
                            "reference_sample_chunk sent but the metadata announces no "
                            "reference_sample; describe its layout in the metadata"
                        )
                    if uploads.sample is None:
                        uploads.sample = self._blobs.upload(
                            self._limits.max_reference_sample_bytes, "reference sample"
                        )
                    await uploads.sample.write(payload)
                else:
                    assert isinstance(payload, Digests)
                    check_sha256("expected_digests.artifact_sha256", payload.artifact_sha256)
                    check_sha256(
                        "expected_digests.reference_sample_sha256", payload.reference_sample_sha256
                    )
                    uploads.digests = payload
        except BaseException:
            await uploads.artifact.discard()
            if uploads.sample is not None:
                await uploads.sample.discard()
            raise
        if new.reference_sample is not None and uploads.sample is None:
            await uploads.artifact.discard()
            raise InvalidArgument(
                "the metadata announces a reference_sample but no reference_sample_chunk arrived"
            )
        return uploads

    @staticmethod
    def _check_digests(uploads: _Uploads) -> None:
        expected = uploads.digests
        if expected.artifact_sha256 and expected.artifact_sha256 != uploads.artifact.sha256():
            raise InvalidArgument(
                f"artifact sha256 mismatch: expected {expected.artifact_sha256}, received bytes "
                f"hash to {uploads.artifact.sha256()} ({uploads.artifact.size} bytes); "
                "the upload was corrupted or truncated"
            )
        if expected.reference_sample_sha256:
            received = uploads.sample.sha256() if uploads.sample else ""
            if expected.reference_sample_sha256 != received:
                raise InvalidArgument(
                    f"reference sample sha256 mismatch: expected "
                    f"{expected.reference_sample_sha256}, received {received or 'nothing'}"
                )

    async def _commit_registration(
        self, new: NewVersion, uploads: _Uploads, validated: Any
    ) -> Registration:
        actor = current_principal().subject
        async with self._db.transaction() as session:
            now = self._now()
            await storage.insert_model_if_missing(session, new.model, new.model_description, now)
            number = await storage.allocate_version(session, new.model, now)
            model = await storage.find_model(session, new.model)
            assert model is not None
            if new.idempotency_key:
                earlier = await storage.find_by_idempotency_key(
                    session, new.model, new.idempotency_key
                )
                if earlier is not None:  # a concurrent retry won the race
                    raise _Replay(earlier.id)
            await self._check_against_production(session, model, validated.signature, new)
            row = VersionRow(
                model_id=model.id,
                model_name=model.name,
                version=number,
                description=new.description,
                params=dict(new.params),
                signature=validated.signature.to_json(),
                artifact_sha256=uploads.artifact.sha256(),
                artifact_size=uploads.artifact.size,
                onnx_ir_version=validated.ir_version,
                onnx_opset_version=validated.opset_version,
                producer_name=validated.producer_name,
                reference_sample_sha256=uploads.sample.sha256() if uploads.sample else None,
                reference_sample_size=uploads.sample.size if uploads.sample else 0,
                reference_sample_spec=(
                    converters.layout_to_json(new.reference_sample)
                    if new.reference_sample
                    else None
                ),
                lineage=dict(new.lineage),
                breaking_change=new.breaking_change,
                idempotency_key=new.idempotency_key or None,
                created_by=actor,
                created_at=now,
                updated_at=now,
                tags=[TagRow(key=k, value=v) for k, v in sorted(new.tags.items())],
                metrics=[MetricRow(name=k, value=v) for k, v in sorted(new.metrics.items())],
            )
            session.add(row)
            await session.flush()
            self._outbox.stage(
                session,
                MODEL_EVENTS,
                converters.registered_event(row, sorted(new.aliases)),
                subject=model.name,
            )
            for alias in new.aliases:
                await self._point_alias(
                    session,
                    model,
                    alias,
                    row,
                    reason="set at registration",
                    cause=Cause.REGISTRATION,
                )
            return Registration(row, sorted(new.aliases), replayed=False)

    async def _check_against_production(
        self, session: AsyncSession, model: ModelRow, signature: Signature, new: NewVersion
    ) -> None:
        production = await storage.find_alias(session, model.id, PRODUCTION)
        if production is None:
            return
        current = await storage.find_version(session, model.id, production.version)
        assert current is not None
        check_compatible_with_production(
            Signature.from_json(current.signature),
            signature,
            production.version,
            new.breaking_change,
        )

    async def _load_registration(self, version_id: int, replayed: bool) -> Registration:
        async with self._db.transaction() as session:
            row = await session.get(VersionRow, version_id)
            assert row is not None
            aliases = (await storage.aliases_by_version(session, row.model_id)).get(row.version, [])
            return Registration(row, aliases, replayed)

    async def _drop_unreferenced(self, blobs: list[str]) -> None:
        for sha256 in blobs:
            async with self._db.transaction() as session:
                referenced = await storage.blob_referenced(session, sha256)
            if not referenced:
                with contextlib.suppress(OSError):
                    await self._blobs.delete(sha256)

    # ----------------------------------------------------------------------- reads

    async def _model(self, session: AsyncSession, name: str) -> ModelRow:
        check_name("model", name)
        model = await storage.find_model(session, name)
        if model is None:
            raise NotFound(f"model {name!r} does not exist; ListModels shows the registered ones")
        return model

    async def _version(self, session: AsyncSession, model: ModelRow, version: int) -> VersionRow:
        check_version(version)
        row = await storage.find_version(session, model.id, version)
        if row is None:
            raise NotFound(
                f"model {model.name!r} has no version {version} (latest is {model.latest_version})"
            )
        return row

    async def get_model(self, name: str) -> tuple[ModelRow, int]:
        async with self._db.transaction() as session:
            model = await self._model(session, name)
            count = await session.scalar(
                select(func.count()).select_from(VersionRow).where(VersionRow.model_id == model.id)
            )
            return model, int(count or 0)

    async def list_models(
        self, requested_size: int, token: str, prefix: str
    ) -> tuple[list[tuple[ModelRow, int]], str]:
        size = page_size(requested_size)
        fingerprint = query_fingerprint({"list_models": prefix})
        after = decode_page_token(token, fingerprint, str)
        async with self._db.transaction() as session:
            counts = (
                select(VersionRow.model_id, func.count().label("n"))
                .group_by(VersionRow.model_id)
                .subquery()
            )
            query = (
                select(ModelRow, func.coalesce(counts.c.n, 0))
                .outerjoin(counts, counts.c.model_id == ModelRow.id)
                .order_by(ModelRow.name)
                .limit(size + 1)
            )
            if prefix:
                query = query.where(ModelRow.name.startswith(prefix, autoescape=True))
            if after is not None:
                query = query.where(ModelRow.name > str(after))
            rows = [(model, int(count)) for model, count in (await session.execute(query)).all()]
        next_token = (
            encode_page_token(rows[size - 1][0].name, fingerprint) if len(rows) > size else ""
        )
        return rows[:size], next_token

    async def get_version(self, model_name: str, version: int) -> tuple[VersionRow, list[str]]:
        async with self._db.transaction() as session:
            model = await self._model(session, model_name)
            row = await self._version(session, model, version)
            aliases = (await storage.aliases_by_version(session, model.id)).get(version, [])
            return row, aliases

    async def list_versions(
        self, model_name: str, requested_size: int, token: str, include_archived: bool
    ) -> tuple[list[tuple[VersionRow, list[str]]], str]:
        size = page_size(requested_size)
        fingerprint = query_fingerprint({"list_versions": model_name, "archived": include_archived})
        before = decode_page_token(token, fingerprint)
        async with self._db.transaction() as session:
            model = await self._model(session, model_name)
            query = (
                select(VersionRow)
                .where(VersionRow.model_id == model.id)
                .order_by(VersionRow.version.desc())
                .limit(size + 1)
            )
            if not include_archived:
                query = query.where(VersionRow.archived.is_(False))
            if before is not None:
                query = query.where(VersionRow.version < int(before))
            rows = list((await session.scalars(query)).all())
            aliases = await storage.aliases_by_version(session, model.id)
        next_token = (
            encode_page_token(rows[size - 1].version, fingerprint) if len(rows) > size else ""
        )
        return [(row, aliases.get(row.version, [])) for row in rows[:size]], next_token

    async def search(self, query: SearchQuery) -> tuple[list[tuple[VersionRow, list[str]]], str]:
        size = page_size(query.page_size)
        fingerprint = query_fingerprint(query.fingerprint())
        offset = int(decode_page_token(query.page_token, fingerprint) or 0)
        async with self._db.transaction() as session:
            rows = list(
                (await session.scalars(query.statement().offset(offset).limit(size + 1))).all()
            )
            model_ids = {row.model_id for row in rows}
            alias_rows = await session.scalars(
                select(AliasRow).where(AliasRow.model_id.in_(model_ids))
            )
            aliases: dict[tuple[int, int], list[str]] = {}
            for alias in sorted(alias_rows, key=lambda a: a.name):
                aliases.setdefault((alias.model_id, alias.version), []).append(alias.name)
        next_token = encode_page_token(offset + size, fingerprint) if len(rows) > size else ""
        return [
            (row, aliases.get((row.model_id, row.version), [])) for row in rows[:size]
        ], next_token

    async def version_by_alias(self, model_name: str, alias: str) -> tuple[VersionRow, list[str]]:
        check_name("alias", alias)
        async with self._db.transaction() as session:
            model = await self._model(session, model_name)
            pointer = await storage.find_alias(session, model.id, alias)
            if pointer is None:
                raise NotFound(f"model {model_name!r} has no alias {alias!r}")
            row = await self._version(session, model, pointer.version)
            aliases = (await storage.aliases_by_version(session, model.id)).get(row.version, [])
            return row, aliases

    async def alias_history(
        self, model_name: str, alias: str, requested_size: int, token: str
    ) -> tuple[list[AliasHistoryRow], str]:
        if alias:
            check_name("alias", alias)
        size = page_size(requested_size)
        fingerprint = query_fingerprint({"history": model_name, "alias": alias})
        before = decode_page_token(token, fingerprint)
        async with self._db.transaction() as session:
            model = await self._model(session, model_name)
            query = (
                select(AliasHistoryRow)
                .where(AliasHistoryRow.model_id == model.id)
                .order_by(AliasHistoryRow.id.desc())
                .limit(size + 1)
            )
            if alias:
                query = query.where(AliasHistoryRow.alias == alias)
            if before is not None:
                query = query.where(AliasHistoryRow.id < int(before))
            rows = list((await session.scalars(query)).all())
        next_token = encode_page_token(rows[size - 1].id, fingerprint) if len(rows) > size else ""
        return rows[:size], next_token

    async def open_artifact(
        self, model_name: str, version: int, offset: int
    ) -> tuple[VersionRow, AsyncIterator[bytes]]:
        row, _ = await self.get_version(model_name, version)
        if offset < 0 or offset > row.artifact_size:
            raise InvalidArgument(
                f"offset must be between 0 and the artifact size {row.artifact_size}, not {offset}"
            )
        return row, self._blobs.read(row.artifact_sha256, offset, self._limits.chunk_bytes)

    async def open_reference_sample(
        self, model_name: str, version: int
    ) -> tuple[VersionRow, AsyncIterator[bytes]]:
        row, _ = await self.get_version(model_name, version)
        if not row.reference_sample_sha256:
            raise NotFound(
                f"model {model_name!r} version {version} was registered without a reference sample"
            )
        return row, self._blobs.read(row.reference_sample_sha256, 0, self._limits.chunk_bytes)

    # -------------------------------------------------------------------- mutations

    async def _locked_model(self, session: AsyncSession, name: str) -> ModelRow:
        """Load a model for a change, holding its row lock until commit.

        Every change of a model begins with this write so changes of one model serialise on
        both SQLite (the first write takes the database lock) and PostgreSQL (row lock)."""
        check_name("model", name)
        if not await storage.touch_model(session, name, self._now()):
            raise NotFound(f"model {name!r} does not exist; ListModels shows the registered ones")
        model = await storage.find_model(session, name)
        assert model is not None
        return model

    async def set_alias(
        self,
        model_name: str,
        alias: str,
        version: int,
        reason: str,
        expected_current: int | None = None,
        protected: bool | None = None,
    ) -> tuple[AliasRow, int]:
        check_name("alias", alias)
        check_version(version)
        check_text("reason", reason)
        async with self._db.transaction() as session:
            model = await self._locked_model(session, model_name)
            row = await self._version(session, model, version)
            existing = await storage.find_alias(session, model.id, alias)
            current = existing.version if existing else 0
            if expected_current is not None and expected_current != current:
                raise FailedPrecondition(
                    f"alias {alias!r} points at version {current or 'nothing'}, not the expected "
                    f"{expected_current or 'nothing'}; read it again and retry"
                )
            pointer = await self._point_alias(
                session, model, alias, row, reason=reason, cause=Cause.REQUEST, protected=protected
            )
            return pointer, current

    async def _point_alias(
        self,
        session: AsyncSession,
        model: ModelRow,
        alias: str,
        version: VersionRow,
        *,
        reason: str,
        cause: Cause,
        protected: bool | None = None,
        rollout_id: str = "",
    ) -> AliasRow:
        principal = current_principal()
        if version.archived:
            raise FailedPrecondition(
                f"version {version.version} of {model.name!r} is archived and cannot take alias "
                f"{alias!r}; register or pick a live version"
            )
        existing = await storage.find_alias(session, model.id, alias)
        if cause is not Cause.ROLLBACK:
            if (
                existing is not None
                and existing.protected
                and not principal.role.allows(Role.ADMIN)
            ):
                raise PermissionDenied(
                    f"alias {alias!r} of {model.name!r} is protected: only the admin role moves it"
                )
            if protected is not None and not principal.role.allows(Role.ADMIN):
                raise PermissionDenied("only the admin role changes whether an alias is protected")
        now = self._now()
        previous = existing.version if existing else 0
        if existing is None:
            existing = AliasRow(
                model_id=model.id,
                name=alias,
                version=version.version,
                protected=(
                    protected
                    if protected is not None
                    else alias in self._limits.default_protected_aliases
                ),
                updated_by=principal.subject,
                updated_at=now,
            )
            model.aliases.append(existing)
        elif previous == version.version and (protected is None or protected == existing.protected):
            return existing  # already so: nothing changes, nothing is announced
        else:
            existing.version = version.version
            existing.updated_by = principal.subject
            existing.updated_at = now
            if protected is not None:
                existing.protected = protected
        change = AliasHistoryRow(
            model_id=model.id,
            model_name=model.name,
            alias=alias,
            version=version.version,
            previous_version=previous,
            actor=principal.subject,
            reason=reason,
            cause=str(cause),
            rollout_id=rollout_id,
            changed_at=now,
        )
        session.add(change)
        self._outbox.stage(
            session,
            MODEL_EVENTS,
            converters.alias_changed_event(change, existing.protected),
            subject=model.name,
        )
        if alias == PRODUCTION and previous != version.version:
            self._outbox.stage(
                session,
                MODEL_EVENTS,
                converters.promoted_event(change, version),
                subject=model.name,
            )
        return existing

    async def delete_alias(
        self, model_name: str, alias: str, reason: str, expected_current: int | None
    ) -> int:
        check_name("alias", alias)
        check_text("reason", reason)
        async with self._db.transaction() as session:
            model = await self._locked_model(session, model_name)
            existing = await storage.find_alias(session, model.id, alias)
            if existing is None:
                raise NotFound(f"model {model_name!r} has no alias {alias!r}")
            if expected_current is not None and expected_current != existing.version:
                raise FailedPrecondition(
                    f"alias {alias!r} points at version {existing.version}, not the expected "
                    f"{expected_current}; read it again and retry"
                )
            if existing.protected and not current_principal().role.allows(Role.ADMIN):
                raise PermissionDenied(
                    f"alias {alias!r} of {model_name!r} is protected: "
                    "only the admin role deletes it"
                )
            self._remove_alias(session, model, existing, reason)
            return existing.version

    def _remove_alias(
        self, session: AsyncSession, model: ModelRow, pointer: AliasRow, reason: str
    ) -> None:
        change = AliasHistoryRow(
            model_id=model.id,
            model_name=model.name,
            alias=pointer.name,
            version=0,
            previous_version=pointer.version,
            actor=current_principal().subject,
            reason=reason,
            cause=str(Cause.REQUEST),
            changed_at=self._now(),
        )
        session.add(change)
        self._outbox.stage(
            session,
            MODEL_EVENTS,
            converters.alias_changed_event(change, pointer.protected),
            subject=model.name,
        )
        model.aliases.remove(pointer)

    async def update_version(
        self,
        model_name: str,
        version: int,
        description: str | None,
        set_tags: dict[str, str],
        remove_tag_keys: list[str],
    ) -> tuple[VersionRow, list[str]]:
        if description is not None:
            check_text("description", description)
        for key in [*set_tags, *remove_tag_keys]:
            check_key("tags", key)
        for key, value in set_tags.items():
            check_text(f"tags[{key[:40]!r}]", value)
        async with self._db.transaction() as session:
            model = await self._locked_model(session, model_name)
            row = await self._version(session, model, version)
            if description is not None:
                row.description = description
            row.set_tags(set_tags)
            removing = set(remove_tag_keys)
            row.tags = [tag for tag in row.tags if tag.key not in removing]
            if len(row.tags) > MAX_MAP_ENTRIES:
                raise InvalidArgument(f"at most {MAX_MAP_ENTRIES} tags per version")
            row.updated_at = self._now()
            aliases = (await storage.aliases_by_version(session, model.id)).get(version, [])
            await session.flush()
            return row, aliases

    async def archive_version(self, model_name: str, version: int, reason: str) -> VersionRow:
        check_text("reason", reason)
        async with self._db.transaction() as session:
            model = await self._locked_model(session, model_name)
            row = await self._version(session, model, version)
            if row.archived:
                raise FailedPrecondition(f"version {version} of {model_name!r} is archived already")
            pointers = [alias for alias in model.aliases if alias.version == version]
            if any(alias.name == PRODUCTION for alias in pointers):
                raise FailedPrecondition(
                    f"version {version} of {model_name!r} is in production; promote another "
                    "version first"
                )
            for pointer in pointers:
                self._remove_alias(session, model, pointer, f"archived: {reason}")
            now = self._now()
            row.archived = True
            row.archived_at = now
            row.archive_reason = reason
            row.updated_at = now
            self._outbox.stage(
                session,
                MODEL_EVENTS,
                converters.archived_event(
                    row, [p.name for p in pointers], current_principal().subject
                ),
                subject=model.name,
            )
            return row

    async def restore_production_after_rollback(
        self,
        session: AsyncSession,
        model_name: str,
        restored: int,
        rolled_back: int,
        rollout_id: str,
        reason: str,
    ) -> None:
        """The deployer rolled a version back: production returns to the version it names,
        and the rolled-back version carries the reason as tags."""
        model = await self._locked_model(session, model_name)
        if restored:
            target = await self._version(session, model, restored)
            await self._point_alias(
                session,
                model,
                PRODUCTION,
                target,
                reason=reason or "rollout rolled back",
                cause=Cause.ROLLBACK,
                rollout_id=rollout_id,
            )
        if rolled_back:
            bad = await self._version(session, model, rolled_back)
            bad.set_tags(
                {
                    "rolled_back": "true",
                    "rolled_back_reason": reason,
                    "rolled_back_rollout": rollout_id,
                }
            )
            bad.updated_at = self._now()
