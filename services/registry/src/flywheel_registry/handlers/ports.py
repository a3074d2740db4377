"""What the use cases need from outside: a unit of work with its repositories, the artifact
store, the ONNX validator, the limits, and a clock."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from flywheel_common.auth import current_principal
from flywheel_common.errors import NotFound
from flywheel_common.settings import Role
from flywheel_common.unit_of_work import Transaction
from flywheel_registry.domain import (
    AliasChange,
    Caller,
    ModelSummary,
    ModelVersion,
    RegisteredModel,
    SearchQuery,
    ValidatedModel,
    VersionView,
    check_name,
    check_version,
)


class Models(Protocol):
    async def get(self, name: str) -> RegisteredModel | None: ...

    async def get_for_update(self, name: str) -> RegisteredModel | None:
        """The model, its changes serialised behind this unit of work's until it ends."""
        ...

    async def get_or_create_for_update(
        self, name: str, description: str, now: datetime
    ) -> RegisteredModel:
        """As `get_for_update`, creating the model first when it does not exist."""
        ...

    async def many(self, names: Iterable[str]) -> dict[str, RegisteredModel]: ...

    async def version_count(self, name: str) -> int: ...

    async def page(self, prefix: str, after: str | None, limit: int) -> list[ModelSummary]:
        """Models by name (starting with `prefix`), after the name `after`."""
        ...

    def save(self, model: RegisteredModel) -> None:
        """Keep the model's changes and stage the events it recorded."""
        ...


class Versions(Protocol):
    async def get(self, model: str, version: int) -> ModelVersion | None: ...

    async def by_idempotency_key(self, model: str, key: str) -> ModelVersion | None: ...

    async def page(
        self, model: str, before: int | None, limit: int, include_archived: bool
    ) -> list[ModelVersion]:
        """The model's versions, newest first, older than `before`."""
        ...

    async def search(self, search: SearchQuery, offset: int, limit: int) -> list[ModelVersion]:
        """Versions across models that match `search`, in its order."""
        ...

    async def blob_referenced(self, sha256: str) -> bool:
        """Whether any version's artifact or reference sample is that blob."""
        ...

    def save(self, version: ModelVersion) -> None: ...


class AliasHistory(Protocol):
    async def page(
        self, model: str, alias: str, before: int | None, limit: int
    ) -> list[tuple[int, AliasChange]]:
        """(position, change), newest first, before position `before`; `alias` "" = all."""
        ...


class UnitOfWork(Transaction, Protocol):
    """One transaction: committed when the block ends normally, with the events of every
    model saved staged for publication; rolled back when it raises."""

    @property
    def models(self) -> Models: ...

    @property
    def versions(self) -> Versions: ...

    @property
    def history(self) -> AliasHistory: ...


class BlobUpload(Protocol):
    """Bytes being received; becomes a blob only when committed."""

    size: int

    async def write(self, chunk: bytes) -> None:
        """RESOURCE_EXHAUSTED past the upload's limit."""
        ...

    def sha256(self) -> str: ...

    async def read_all(self) -> bytes: ...

    async def commit(self) -> bool:
        """Store under the digest; False when that blob existed already."""
        ...

    async def discard(self) -> None: ...


class BlobStore(Protocol):
    """Where artifacts and reference samples live, by sha256 (a local folder, or an object
    store)."""

    def upload(self, limit_bytes: int, what: str) -> BlobUpload: ...

    def read(
        self, sha256: str, offset: int = 0, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]: ...

    async def delete(self, sha256: str) -> None: ...


class Validator(Protocol):
    async def validate(self, artifact: bytes) -> ValidatedModel:
        """INVALID_ARGUMENT (or DEADLINE_EXCEEDED) unless the bytes are a servable model."""
        ...


@dataclass(frozen=True)
class RegistryLimits:
    max_artifact_bytes: int
    max_reference_sample_bytes: int
    default_protected_aliases: frozenset[str] = frozenset()
    chunk_bytes: int = 1 << 20


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class Deps:
    unit_of_work: Callable[[], UnitOfWork]
    blobs: BlobStore
    validator: Validator
    limits: RegistryLimits
    clock: Callable[[], datetime] = utc_now


def caller(model: str) -> Caller:
    """Who is calling, and whether it is an admin of `model` (protected aliases move only
    for admins): the RPC's principal, or `system` outside any RPC."""
    principal = current_principal()
    return Caller(principal.subject, principal.allows(Role.ADMIN, model))


def missing_model(name: str) -> NotFound:
    return NotFound(f"model {name!r} does not exist; ListModels shows the registered ones")


async def load_model(uow: UnitOfWork, name: str) -> RegisteredModel:
    check_name("model", name)
    model = await uow.models.get(name)
    if model is None:
        raise missing_model(name)
    return model


async def lock_model(deps: Deps, uow: UnitOfWork, name: str) -> RegisteredModel:
    """The model, for a change: the other changes of it wait until this unit of work ends."""
    check_name("model", name)
    model = await uow.models.get_for_update(name)
    if model is None:
        raise missing_model(name)
    return with_settings(deps, model)


def with_settings(deps: Deps, model: RegisteredModel) -> RegisteredModel:
    model.protected_by_default = deps.limits.default_protected_aliases
    return model


async def load_version(uow: UnitOfWork, model: RegisteredModel, version: int) -> ModelVersion:
    check_version(version)
    found = await uow.versions.get(model.name, version)
    if found is None:
        raise NotFound(
            f"model {model.name!r} has no version {version} (latest is {model.latest_version})"
        )
    return found


def view(model: RegisteredModel, version: ModelVersion) -> VersionView:
    return VersionView(version, model.aliases_of(version.version))
