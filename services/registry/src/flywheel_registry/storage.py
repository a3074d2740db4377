"""The registry's tables, their repositories, and the unit of work that commits them with
the events they caused (rows of the outbox, in the same transaction)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Integer,
    Select,
    String,
    Text,
    UniqueConstraint,
    exists,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, aliased, mapped_column, relationship

from flywheel_common.db import ROW_ID, TIMESTAMP, Base, insert_unless_present
from flywheel_common.signatures import Signature
from flywheel_common.timestamps import stored_utc
from flywheel_common.topics import MODEL_EVENTS
from flywheel_common.unit_of_work import SqlUnitOfWork
from flywheel_registry import converters
from flywheel_registry.domain import (
    AliasChange,
    AliasChanged,
    AliasPointer,
    Artifact,
    Cause,
    ModelSummary,
    ModelVersion,
    OrderKey,
    ReferenceSample,
    RegisteredModel,
    SearchQuery,
)


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # The last version number handed out; bumping it is the first write of a registration,
    # so concurrent registrations of one model serialise on this row: no gaps, no repeats.
    latest_version: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)

    aliases: Mapped[list[AliasRow]] = relationship(
        lazy="selectin", order_by="AliasRow.name", cascade="all, delete-orphan"
    )


class VersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version"),
        UniqueConstraint("model_id", "idempotency_key"),
    )

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(BigInteger)
    description: Mapped[str] = mapped_column(Text, default="")
    archived: Mapped[bool] = mapped_column(Boolean, default=False)
    params: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    signature: Mapped[dict[str, Any]] = mapped_column(JSON)
    artifact_sha256: Mapped[str] = mapped_column(String(64), index=True)
    artifact_size: Mapped[int] = mapped_column(BigInteger)
    onnx_ir_version: Mapped[int] = mapped_column(Integer)
    onnx_opset_version: Mapped[int] = mapped_column(Integer)
    producer_name: Mapped[str] = mapped_column(String(256), default="")
    reference_sample_sha256: Mapped[str | None] = mapped_column(String(64), index=True)
    reference_sample_size: Mapped[int] = mapped_column(BigInteger, default=0)
    reference_sample_spec: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    breaking_change: Mapped[bool] = mapped_column(Boolean, default=False)
    idempotency_key: Mapped[str | None] = mapped_column(String(256))
    created_by: Mapped[str] = mapped_column(String(256))
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP, index=True)
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)
    archived_at: Mapped[datetime | None] = mapped_column(TIMESTAMP)
    archive_reason: Mapped[str] = mapped_column(Text, default="")

    tags: Mapped[list[TagRow]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", order_by="TagRow.key"
    )
    metrics: Mapped[list[MetricRow]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", order_by="MetricRow.name"
    )


class TagRow(Base):
    """Tags in their own table so searches filter on them in SQL on every database."""

    __tablename__ = "version_tags"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    key: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class MetricRow(Base):
    __tablename__ = "version_metrics"

    version_id: Mapped[int] = mapped_column(
        ForeignKey("model_versions.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(256), primary_key=True)
    value: Mapped[float] = mapped_column(Float)


class AliasRow(Base):
    __tablename__ = "aliases"

    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)
    protected: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_by: Mapped[str] = mapped_column(String(256))
    updated_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class AliasHistoryRow(Base):
    __tablename__ = "alias_history"

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    model_name: Mapped[str] = mapped_column(String(128))
    alias: Mapped[str] = mapped_column(String(128))
    version: Mapped[int] = mapped_column(BigInteger)
    """0 when the alias was deleted."""
    previous_version: Mapped[int] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(String(256))
    reason: Mapped[str] = mapped_column(Text, default="")
    cause: Mapped[str] = mapped_column(String(32))
    rollout_id: Mapped[str] = mapped_column(String(128), default="")
    changed_at: Mapped[datetime] = mapped_column(TIMESTAMP)


def search_statement(search: SearchQuery) -> Any:
    """The search as a query of the versions table, in its order (newest first unless it
    says otherwise). The search is checked already (`SearchQuery.check`)."""
    statement = select(VersionRow)
    if search.models:
        statement = statement.where(VersionRow.model_name.in_(search.models))
    for tag_key, tag_value in search.tags:
        statement = statement.where(
            exists().where(
                TagRow.version_id == VersionRow.id,
                TagRow.key == tag_key,
                TagRow.value == tag_value,
            )
        )
    for condition in search.metrics:
        compare = {
            "<": MetricRow.value < condition.value,
            "<=": MetricRow.value <= condition.value,
            "==": MetricRow.value == condition.value,
            ">=": MetricRow.value >= condition.value,
            ">": MetricRow.value > condition.value,
        }[condition.comparison]
        statement = statement.where(
            exists().where(
                MetricRow.version_id == VersionRow.id,
                MetricRow.name == condition.metric,
                compare,
            )
        )
    if search.aliases:
        statement = statement.where(
            exists().where(
                AliasRow.model_id == VersionRow.model_id,
                AliasRow.version == VersionRow.version,
                AliasRow.name.in_(search.aliases),
            )
        )
    if search.created_after is not None:
        statement = statement.where(VersionRow.created_at >= search.created_after)
    if search.created_before is not None:
        statement = statement.where(VersionRow.created_at < search.created_before)
    if not search.include_archived:
        statement = statement.where(VersionRow.archived.is_(False))
    ordering: list[Any] = []
    for key in search.order_by or (OrderKey("created_at", descending=True),):
        if key.field == "metric":
            metric = aliased(MetricRow)
            statement = statement.outerjoin(
                metric, (metric.version_id == VersionRow.id) & (metric.name == key.metric)
            )
            column: Any = metric.value
        else:
            column = {
                "created_at": VersionRow.created_at,
                "version": VersionRow.version,
                "model": VersionRow.model_name,
            }[key.field]
        ordering.append((column.desc() if key.descending else column.asc()).nulls_last())
    ordering += [VersionRow.model_name.asc(), VersionRow.version.asc()]
    return statement.order_by(*ordering)


class SqlModels:
    """Models with their aliases. `get_for_update` is the first write of a change, so the
    changes of one model serialise on SQLite (the first write takes the database lock) and
    PostgreSQL (the row lock) alike."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self.saved: dict[str, RegisteredModel] = {}
        """Models saved in this unit of work, in the order first saved."""

    async def get(self, name: str) -> RegisteredModel | None:
        if name in self.saved:
            return self.saved[name]
        row = await self._row(name)
        return None if row is None else model_of(row)

    async def get_for_update(self, name: str) -> RegisteredModel | None:
        locked = await self._session.execute(
            update(ModelRow)
            .where(ModelRow.name == name)
            .values(updated_at=ModelRow.updated_at)
            .execution_options(synchronize_session=False)
        )
        if not locked.rowcount:  # type: ignore[attr-defined]
            return None
        return await self.get(name)

    async def get_or_create_for_update(
        self, name: str, description: str, now: datetime
    ) -> RegisteredModel:
        """The model, created first unless it exists (safe under concurrent creations)."""
        await insert_unless_present(
            self._session,
            ModelRow,
            {
                "name": name,
                "description": description,
                "latest_version": 0,
                "created_at": now,
                "updated_at": now,
            },
            unique=["name"],
        )
        model = await self.get_for_update(name)
        assert model is not None, "the model row was just ensured"
        return model

    async def many(self, names: Iterable[str]) -> dict[str, RegisteredModel]:
        rows = await self._session.scalars(select(ModelRow).where(ModelRow.name.in_(set(names))))
        return {row.name: model_of(row) for row in rows}

    async def version_count(self, name: str) -> int:
        count = await self._session.scalar(
            select(func.count())
            .select_from(VersionRow)
            .join(ModelRow, ModelRow.id == VersionRow.model_id)
            .where(ModelRow.name == name)
        )
        return int(count or 0)

    async def page(self, prefix: str, after: str | None, limit: int) -> list[ModelSummary]:
        """Models by name, after the name `after`, with their version counts."""
        counts = (
            select(VersionRow.model_id, func.count().label("n"))
            .group_by(VersionRow.model_id)
            .subquery()
        )
        query = (
            select(ModelRow, func.coalesce(counts.c.n, 0))
            .outerjoin(counts, counts.c.model_id == ModelRow.id)
            .order_by(ModelRow.name)
            .limit(limit)
        )
        if prefix:
            query = query.where(ModelRow.name.startswith(prefix, autoescape=True))
        if after is not None:
            query = query.where(ModelRow.name > after)
        rows = (await self._session.execute(query)).all()
        return [ModelSummary(model_of(row), int(count)) for row, count in rows]

    def save(self, model: RegisteredModel) -> None:
        self.saved[model.name] = model

    async def _row(self, name: str) -> ModelRow | None:
        return await self._session.scalar(select(ModelRow).where(ModelRow.name == name))

    async def write(self) -> None:
        for model in self.saved.values():
            row = await self._row(model.name)
            assert row is not None, "a model is created before it changes"
            row.latest_version = model.latest_version
            row.updated_at = model.updated_at
            current = {alias.name: alias for alias in row.aliases}
            for name, pointer in model.aliases.items():
                alias = current.pop(name, None)
                if alias is None:
                    alias = AliasRow(model_id=row.id, name=name)
                    row.aliases.append(alias)
                alias.version = pointer.version
                alias.protected = pointer.protected
                alias.updated_by = pointer.updated_by
                alias.updated_at = pointer.updated_at
            for gone in current.values():
                row.aliases.remove(gone)
            for event in model.events:
                if isinstance(event, AliasChanged):
                    self._session.add(history_row(row.id, event.change))


def model_of(row: ModelRow) -> RegisteredModel:
    return RegisteredModel(
        name=row.name,
        description=row.description,
        latest_version=row.latest_version,
        created_at=stored_utc(row.created_at),
        updated_at=stored_utc(row.updated_at),
        aliases={
            alias.name: AliasPointer(
                alias.name,
                alias.version,
                alias.protected,
                alias.updated_by,
                stored_utc(alias.updated_at),
            )
            for alias in row.aliases
        },
    )


def history_row(model_id: int, change: AliasChange) -> AliasHistoryRow:
    return AliasHistoryRow(
        model_id=model_id,
        model_name=change.model,
        alias=change.alias,
        version=change.version,
        previous_version=change.previous_version,
        actor=change.actor,
        reason=change.reason,
        cause=str(change.cause),
        rollout_id=change.rollout_id,
        changed_at=change.changed_at,
    )


class SqlVersions:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session
        self.saved: dict[tuple[str, int], ModelVersion] = {}

    async def get(self, model: str, version: int) -> ModelVersion | None:
        if (model, version) in self.saved:
            return self.saved[model, version]
        row = await self._row(model, version)
        return None if row is None else version_of(row)

    async def by_idempotency_key(self, model: str, key: str) -> ModelVersion | None:
        row = await self._session.scalar(_of_model(model).where(VersionRow.idempotency_key == key))
        return None if row is None else version_of(row)

    async def page(
        self, model: str, before: int | None, limit: int, include_archived: bool
    ) -> list[ModelVersion]:
        """The model's versions, newest first, older than `before`."""
        query = _of_model(model).order_by(VersionRow.version.desc()).limit(limit)
        if not include_archived:
            query = query.where(VersionRow.archived.is_(False))
        if before is not None:
            query = query.where(VersionRow.version < before)
        return [version_of(row) for row in await self._session.scalars(query)]

    async def search(self, search: SearchQuery, offset: int, limit: int) -> list[ModelVersion]:
        rows = await self._session.scalars(search_statement(search).offset(offset).limit(limit))
        return [version_of(row) for row in rows]

    async def blob_referenced(self, sha256: str) -> bool:
        found = await self._session.scalar(
            select(VersionRow.id)
            .where(
                (VersionRow.artifact_sha256 == sha256)
                | (VersionRow.reference_sample_sha256 == sha256)
            )
            .limit(1)
        )
        return found is not None

    def save(self, version: ModelVersion) -> None:
        self.saved[version.model, version.version] = version

    async def _row(self, model: str, version: int) -> VersionRow | None:
        return await self._session.scalar(_of_model(model).where(VersionRow.version == version))

    async def write(self) -> None:
        for version in self.saved.values():
            row = await self._row(version.model, version.version)
            if row is None:
                model_id = await self._session.scalar(
                    select(ModelRow.id).where(ModelRow.name == version.model)
                )
                assert model_id is not None, "a version's model is created before it"
                row = new_version_row(model_id, version)
                self._session.add(row)
            row.description = version.description
            row.updated_at = version.updated_at
            row.archived = version.archived
            row.archived_at = version.archived_at
            row.archive_reason = version.archive_reason
            current = {tag.key: tag for tag in row.tags}
            for key, value in version.tags.items():
                tag = current.pop(key, None)
                if tag is None:
                    row.tags.append(TagRow(key=key, value=value))
                else:
                    tag.value = value
            for gone in current.values():
                row.tags.remove(gone)


def _of_model(model: str) -> Select[VersionRow]:
    return (
        select(VersionRow)
        .join(ModelRow, ModelRow.id == VersionRow.model_id)
        .where(ModelRow.name == model)
    )


def new_version_row(model_id: int, version: ModelVersion) -> VersionRow:
    artifact, sample = version.artifact, version.reference_sample
    return VersionRow(
        model_id=model_id,
        model_name=version.model,
        version=version.version,
        params=dict(version.params),
        signature=version.signature.to_json(),
        artifact_sha256=artifact.sha256,
        artifact_size=artifact.size,
        onnx_ir_version=artifact.onnx_ir_version,
        onnx_opset_version=artifact.onnx_opset_version,
        producer_name=artifact.producer_name,
        reference_sample_sha256=sample.sha256 if sample else None,
        reference_sample_size=sample.size if sample else 0,
        reference_sample_spec=converters.layout_to_json(sample.layout) if sample else None,
        lineage=dict(version.lineage),
        breaking_change=version.breaking_change,
        idempotency_key=version.idempotency_key or None,
        created_by=version.created_by,
        created_at=version.created_at,
        tags=[],
        metrics=[MetricRow(name=k, value=v) for k, v in sorted(version.metrics.items())],
    )


def version_of(row: VersionRow) -> ModelVersion:
    sample = None
    if row.reference_sample_sha256 and row.reference_sample_spec is not None:
        sample = ReferenceSample(
            row.reference_sample_sha256,
            row.reference_sample_size,
            converters.layout_from_json(row.reference_sample_spec),
        )
    return ModelVersion(
        model=row.model_name,
        version=row.version,
        signature=Signature.from_json(row.signature),
        artifact=Artifact(
            row.artifact_sha256,
            row.artifact_size,
            row.onnx_ir_version,
            row.onnx_opset_version,
            row.producer_name,
        ),
        reference_sample=sample,
        description=row.description,
        params=dict(row.params),
        metrics={metric.name: metric.value for metric in row.metrics},
        tags={tag.key: tag.value for tag in row.tags},
        lineage=dict(row.lineage),
        breaking_change=row.breaking_change,
        idempotency_key=row.idempotency_key or "",
        archived=row.archived,
        archived_at=stored_utc(row.archived_at) if row.archived_at else None,
        archive_reason=row.archive_reason,
        created_by=row.created_by,
        created_at=stored_utc(row.created_at),
        updated_at=stored_utc(row.updated_at),
    )


class SqlAliasHistory:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def page(
        self, model: str, alias: str, before: int | None, limit: int
    ) -> list[tuple[int, AliasChange]]:
        """(position, change) of the model's alias changes (of `alias` only, unless empty),
        newest first, before the position `before`."""
        query = (
            select(AliasHistoryRow)
            .join(ModelRow, ModelRow.id == AliasHistoryRow.model_id)
            .where(ModelRow.name == model)
            .order_by(AliasHistoryRow.id.desc())
            .limit(limit)
        )
        if alias:
            query = query.where(AliasHistoryRow.alias == alias)
        if before is not None:
            query = query.where(AliasHistoryRow.id < before)
        return [
            (
                row.id,
                AliasChange(
                    model=row.model_name,
                    alias=row.alias,
                    version=row.version,
                    previous_version=row.previous_version,
                    actor=row.actor,
                    reason=row.reason,
                    cause=Cause(row.cause),
                    changed_at=stored_utc(row.changed_at),
                    rollout_id=row.rollout_id,
                ),
            )
            for row in await self._session.scalars(query)
        ]


class RegistryUnitOfWork(SqlUnitOfWork):
    """A transaction of the registry's database: on a normal exit it writes the models and
    versions saved, with the alias history and the outbox rows (flywheel.model-events) of
    the events the models recorded, and commits; on an error it rolls back."""

    def _open(self, session: AsyncSession) -> None:
        self.models = SqlModels(session)
        self.versions = SqlVersions(session)
        self.history = SqlAliasHistory(session)

    async def _write(self) -> None:
        await self.models.write()
        await self.versions.write()
        await self.session.flush()
        for model in self.models.saved.values():
            for event in model.events:
                self._stage(MODEL_EVENTS, converters.event_message(event), model.name)
