"""In-memory stand-ins for the registry's ports: a unit of work that records what it would
stage in the outbox, an artifact store, an ONNX validator and a clock."""

from __future__ import annotations

import copy
import hashlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import datetime

from flywheel_common.errors import InvalidArgument, ResourceExhausted
from flywheel_common.signatures import DYNAMIC, Signature, TensorSpec
from flywheel_registry.domain import (
    AliasChange,
    AliasChanged,
    ModelSummary,
    ModelVersion,
    RegisteredModel,
    RegistryEvent,
    SearchQuery,
    ValidatedModel,
)
from flywheel_registry.handlers.ports import Deps, RegistryLimits
from flywheel_testing.fakes import FakeClock, InMemoryUnitOfWork

IRIS = Signature(
    inputs=(TensorSpec("features", "FP32", (DYNAMIC, 4)),),
    outputs=(TensorSpec("label", "INT64", (DYNAMIC,)),),
)
WIDER = Signature(
    inputs=(TensorSpec("features", "FP32", (DYNAMIC, 5)),),
    outputs=(TensorSpec("label", "INT64", (DYNAMIC,)),),
)


@dataclass
class Store:
    """What the database holds, and every event committed, in commit order."""

    models: dict[str, RegisteredModel] = field(default_factory=dict)
    versions: dict[tuple[str, int], ModelVersion] = field(default_factory=dict)
    history: list[AliasChange] = field(default_factory=list)
    claimed: set[tuple[str, str]] = field(default_factory=set)
    events: list[RegistryEvent] = field(default_factory=list)
    """Staged on flywheel.model-events."""
    commits: int = 0

    def of_type(self, kind: type[RegistryEvent]) -> list[RegistryEvent]:
        return [event for event in self.events if isinstance(event, kind)]


class FakeModels:
    def __init__(self, rows: dict[str, RegisteredModel], versions: FakeVersions) -> None:
        self.rows = rows
        self.saved: dict[str, RegisteredModel] = {}
        self._versions = versions

    async def get(self, name: str) -> RegisteredModel | None:
        found = self.saved.get(name) or self.rows.get(name)
        return copy.deepcopy(found)

    async def get_for_update(self, name: str) -> RegisteredModel | None:
        return await self.get(name)

    async def get_or_create_for_update(
        self, name: str, description: str, now: datetime
    ) -> RegisteredModel:
        if name not in self.rows:
            self.rows[name] = RegisteredModel(name, now, now, description)
        found = await self.get(name)
        assert found is not None
        return found

    async def many(self, names: Iterable[str]) -> dict[str, RegisteredModel]:
        return {name: copy.deepcopy(self.rows[name]) for name in names if name in self.rows}

    async def version_count(self, name: str) -> int:
        return sum(1 for model, _ in self._versions.rows if model == name)

    async def page(self, prefix: str, after: str | None, limit: int) -> list[ModelSummary]:
        names = sorted(
            n for n in self.rows if n.startswith(prefix) and (after is None or n > after)
        )
        return [
            ModelSummary(copy.deepcopy(self.rows[n]), await self.version_count(n))
            for n in names[:limit]
        ]

    def save(self, model: RegisteredModel) -> None:
        self.saved[model.name] = model
        stored = copy.deepcopy(model)
        stored.events = []
        self.rows[model.name] = stored


class FakeVersions:
    def __init__(self, rows: dict[tuple[str, int], ModelVersion]) -> None:
        self.rows = rows

    async def get(self, model: str, version: int) -> ModelVersion | None:
        return copy.deepcopy(self.rows.get((model, version)))

    async def by_idempotency_key(self, model: str, key: str) -> ModelVersion | None:
        found = [v for v in self.rows.values() if (v.model, v.idempotency_key) == (model, key)]
        return copy.deepcopy(found[0]) if found else None

    async def page(
        self, model: str, before: int | None, limit: int, include_archived: bool
    ) -> list[ModelVersion]:
        found = [
            v
            for (name, number), v in sorted(self.rows.items(), reverse=True)
            if name == model
            and (before is None or number < before)
            and (include_archived or not v.archived)
        ]
        return copy.deepcopy(found[:limit])

    async def search(self, search: SearchQuery, offset: int, limit: int) -> list[ModelVersion]:
        found = [
            v
            for v in self.rows.values()
            if (not search.models or v.model in search.models)
            and all(v.tags.get(key) == value for key, value in search.tags)
            and (search.include_archived or not v.archived)
        ]
        found.sort(key=lambda v: (v.created_at, v.model, v.version), reverse=True)
        return copy.deepcopy(found[offset : offset + limit])

    async def blob_referenced(self, sha256: str) -> bool:
        return any(
            v.artifact.sha256 == sha256
            or (v.reference_sample is not None and v.reference_sample.sha256 == sha256)
            for v in self.rows.values()
        )

    def save(self, version: ModelVersion) -> None:
        self.rows[version.model, version.version] = copy.deepcopy(version)


class FakeHistory:
    def __init__(self, rows: list[AliasChange]) -> None:
        self.rows = rows

    async def page(
        self, model: str, alias: str, before: int | None, limit: int
    ) -> list[tuple[int, AliasChange]]:
        found = [
            (position, change)
            for position, change in reversed(list(enumerate(self.rows, start=1)))
            if change.model == model
            and (not alias or change.alias == alias)
            and (before is None or position < before)
        ]
        return found[:limit]


class FakeUnitOfWork(InMemoryUnitOfWork[Store]):
    """The store as repositories; a commit records the events of every model saved."""

    def _open(self, store: Store) -> None:
        self.versions = FakeVersions(dict(store.versions))
        self.models = FakeModels(dict(store.models), self.versions)
        self.history = FakeHistory(list(store.history))

    def _commit(self, store: Store) -> None:
        store.models, store.versions = self.models.rows, self.versions.rows
        store.commits += 1
        for model in self.models.saved.values():
            store.events.extend(model.events)
            store.history.extend(e.change for e in model.events if isinstance(e, AliasChanged))


class FakeUpload:
    def __init__(self, store: FakeBlobStore, limit_bytes: int, what: str) -> None:
        self._store, self._limit, self._what = store, limit_bytes, what
        self._hash = hashlib.sha256()
        self._chunks: list[bytes] = []
        self.size = 0
        self._open = True
        store.open_uploads += 1

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._limit:
            raise ResourceExhausted(f"the {self._what} exceeds the limit of {self._limit} bytes")
        self._hash.update(chunk)
        self._chunks.append(chunk)

    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def read_all(self) -> bytes:
        return b"".join(self._chunks)

    async def commit(self) -> bool:
        self._close()
        if self.sha256() in self._store.blobs:
            return False
        self._store.blobs[self.sha256()] = b"".join(self._chunks)
        return True

    async def discard(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._open:
            self._store.open_uploads -= 1
        self._open = False


class FakeBlobStore:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}
        self.open_uploads = 0

    def upload(self, limit_bytes: int, what: str) -> FakeUpload:
        return FakeUpload(self, limit_bytes, what)

    async def read(
        self, sha256: str, offset: int = 0, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        data = self.blobs[sha256]
        for start in range(offset, len(data), chunk_size):
            yield data[start : start + chunk_size]

    async def delete(self, sha256: str) -> None:
        self.blobs.pop(sha256, None)


@dataclass
class FakeValidator:
    """Bytes starting with `onnx:` are a model; `onnx:wider` one with a fifth input."""

    def __post_init__(self) -> None:
        self.calls = 0

    async def validate(self, artifact: bytes) -> ValidatedModel:
        self.calls += 1
        if not artifact.startswith(b"onnx:"):
            raise InvalidArgument("the artifact is not a valid ONNX model")
        signature = WIDER if artifact.startswith(b"onnx:wider") else IRIS
        return ValidatedModel(signature, ir_version=9, opset_version=17, producer_name="fake")


@dataclass
class World:
    store: Store
    blobs: FakeBlobStore
    validator: FakeValidator
    clock: FakeClock
    deps: Deps


def world(protected_aliases: Iterable[str] = ()) -> World:
    store, blobs, validator, clock = Store(), FakeBlobStore(), FakeValidator(), FakeClock()
    limits = RegistryLimits(
        max_artifact_bytes=1024,
        max_reference_sample_bytes=1024,
        default_protected_aliases=frozenset(protected_aliases),
        chunk_bytes=4,
    )
    deps = Deps(lambda: FakeUnitOfWork(store), blobs, validator, limits, clock)
    return World(store, blobs, validator, clock, deps)
