"""The registry's tables and the queries over them (SQLite or PostgreSQL)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column, relationship

from flywheel_common.db import Base, insert_unless_present

_ID = BigInteger().with_variant(Integer, "sqlite")
_TIME = DateTime(timezone=True)


class ModelRow(Base):
    __tablename__ = "models"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    # The last version number handed out; bumping it is the first write of a registration,
    # so concurrent registrations of one model serialise on this row: no gaps, no repeats.
    latest_version: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime] = mapped_column(_TIME)
    updated_at: Mapped[datetime] = mapped_column(_TIME)

    aliases: Mapped[list[AliasRow]] = relationship(
        lazy="selectin", order_by="AliasRow.name", cascade="all, delete-orphan"
    )


class VersionRow(Base):
    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "version"),
        UniqueConstraint("model_id", "idempotency_key"),
    )

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
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
    created_at: Mapped[datetime] = mapped_column(_TIME, index=True)
    updated_at: Mapped[datetime] = mapped_column(_TIME)
    archived_at: Mapped[datetime | None] = mapped_column(_TIME)
    archive_reason: Mapped[str] = mapped_column(Text, default="")

    tags: Mapped[list[TagRow]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", order_by="TagRow.key"
    )
    metrics: Mapped[list[MetricRow]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", order_by="MetricRow.name"
    )

    @property
    def tag_map(self) -> dict[str, str]:
        return {tag.key: tag.value for tag in self.tags}

    def set_tags(self, tags: dict[str, str]) -> None:
        current = {tag.key: tag for tag in self.tags}
        for key, value in tags.items():
            if key in current:
                current[key].value = value
            else:
                self.tags.append(TagRow(key=key, value=value))


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
    updated_at: Mapped[datetime] = mapped_column(_TIME)


class AliasHistoryRow(Base):
    __tablename__ = "alias_history"

    id: Mapped[int] = mapped_column(_ID, primary_key=True, autoincrement=True)
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
    changed_at: Mapped[datetime] = mapped_column(_TIME)


async def insert_model_if_missing(
    session: AsyncSession, name: str, description: str, now: datetime
) -> None:
    """Create the model row unless it exists; safe under concurrent first registrations."""
    await insert_unless_present(
        session,
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


async def allocate_version(session: AsyncSession, model: str, now: datetime) -> int:
    """Hand out the model's next version number; holds the model row's lock until commit."""
    allocated = await session.scalar(
        update(ModelRow)
        .where(ModelRow.name == model)
        .values(latest_version=ModelRow.latest_version + 1, updated_at=now)
        .returning(ModelRow.latest_version)
    )
    assert allocated is not None, "the model row is created before allocation"
    return int(allocated)


async def touch_model(session: AsyncSession, name: str, now: datetime) -> bool:
    """Mark the model changed; as a transaction's first write it locks the model's changes."""
    result = await session.execute(
        update(ModelRow)
        .where(ModelRow.name == name)
        .values(updated_at=now)
        .execution_options(synchronize_session=False)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def find_model(session: AsyncSession, name: str) -> ModelRow | None:
    return await session.scalar(select(ModelRow).where(ModelRow.name == name))


async def find_version(session: AsyncSession, model_id: int, version: int) -> VersionRow | None:
    return await session.scalar(
        select(VersionRow).where(VersionRow.model_id == model_id, VersionRow.version == version)
    )


async def find_by_idempotency_key(session: AsyncSession, model: str, key: str) -> VersionRow | None:
    return await session.scalar(
        select(VersionRow).where(VersionRow.model_name == model, VersionRow.idempotency_key == key)
    )


async def find_alias(session: AsyncSession, model_id: int, alias: str) -> AliasRow | None:
    return await session.get(AliasRow, (model_id, alias))


async def aliases_by_version(session: AsyncSession, model_id: int) -> dict[int, list[str]]:
    rows = await session.scalars(
        select(AliasRow).where(AliasRow.model_id == model_id).order_by(AliasRow.name)
    )
    found: dict[int, list[str]] = {}
    for row in rows:
        found.setdefault(row.version, []).append(row.name)
    return found


async def blob_referenced(session: AsyncSession, sha256: str) -> bool:
    found = await session.scalar(
        select(VersionRow.id)
        .where(
            (VersionRow.artifact_sha256 == sha256) | (VersionRow.reference_sample_sha256 == sha256)
        )
        .limit(1)
    )
    return found is not None
