"""Registering a version: receive its bytes as a stream, validate them, store them by
digest, and commit the version with its events; the same idempotency key replays it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from enum import StrEnum

from flywheel_common.errors import InvalidArgument
from flywheel_registry.domain import (
    PRODUCTION,
    Artifact,
    NewVersion,
    ReferenceSample,
    ValidatedModel,
    VersionView,
    check_sha256,
)
from flywheel_registry.handlers.ports import BlobUpload, Deps, caller, view, with_settings


class PartKind(StrEnum):
    ARTIFACT = "artifact_chunk"
    SAMPLE = "reference_sample_chunk"
    DIGESTS = "expected_digests"


@dataclass(frozen=True)
class Digests:
    artifact_sha256: str = ""
    reference_sample_sha256: str = ""


Part = tuple[PartKind, "bytes | Digests"]
"""One message of the stream after the metadata, in the order of PartKind."""


@dataclass(frozen=True)
class Registration:
    version: VersionView
    replayed: bool
    """The idempotency key named a version registered before; nothing new was stored."""


@dataclass
class _Uploads:
    artifact: BlobUpload
    sample: BlobUpload | None = None
    digests: Digests = field(default_factory=Digests)

    def all(self) -> list[BlobUpload]:
        return [self.artifact] if self.sample is None else [self.artifact, self.sample]


async def register(deps: Deps, new: NewVersion, parts: AsyncIterator[Part]) -> Registration:
    new.check()
    if new.idempotency_key:
        replay = await _replay(deps, new)
        if replay is not None:
            return replay
    uploads = await _receive(deps, new, parts)
    created: list[str] = []
    try:
        validated = await deps.validator.validate(await uploads.artifact.read_all())
        if new.reference_sample is not None:
            new.reference_sample.check(validated.signature)
            new.reference_sample.check_received(uploads.sample.size if uploads.sample else 0)
        _check_digests(uploads)
        for upload in uploads.all():
            if await upload.commit():
                created.append(upload.sha256())
        return await _commit(deps, new, uploads, validated)
    except BaseException:
        for upload in uploads.all():
            await upload.discard()
        await _drop_unreferenced(deps, created)
        raise


async def _replay(deps: Deps, new: NewVersion) -> Registration | None:
    async with deps.unit_of_work() as uow:
        earlier = await uow.versions.by_idempotency_key(new.model, new.idempotency_key)
        if earlier is None:
            return None
        model = await uow.models.get(new.model)
    assert model is not None
    return Registration(view(model, earlier), replayed=True)


async def _commit(
    deps: Deps, new: NewVersion, uploads: _Uploads, validated: ValidatedModel
) -> Registration:
    async with deps.unit_of_work() as uow:
        now = deps.clock()
        model = with_settings(
            deps, await uow.models.get_or_create_for_update(new.model, new.model_description, now)
        )
        if new.idempotency_key:
            earlier = await uow.versions.by_idempotency_key(new.model, new.idempotency_key)
            if earlier is not None:  # a concurrent retry won the race
                return Registration(view(model, earlier), replayed=True)
        production = model.alias_version(PRODUCTION)
        version = model.register(
            new,
            validated,
            Artifact(
                uploads.artifact.sha256(),
                uploads.artifact.size,
                validated.ir_version,
                validated.opset_version,
                validated.producer_name,
            ),
            (
                ReferenceSample(uploads.sample.sha256(), uploads.sample.size, new.reference_sample)
                if uploads.sample is not None and new.reference_sample is not None
                else None
            ),
            production=await uow.versions.get(new.model, production) if production else None,
            caller=caller(new.model),
            now=now,
        )
        uow.versions.save(version)
        uow.models.save(model)
    return Registration(view(model, version), replayed=False)


async def _receive(deps: Deps, new: NewVersion, parts: AsyncIterator[Part]) -> _Uploads:
    """The streamed bytes, written to uploads as they arrive (never whole in memory)."""
    limits = deps.limits
    uploads = _Uploads(deps.blobs.upload(limits.max_artifact_bytes, "artifact"))
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
            if isinstance(payload, Digests):
                check_sha256("expected_digests.artifact_sha256", payload.artifact_sha256)
                check_sha256(
                    "expected_digests.reference_sample_sha256", payload.reference_sample_sha256
                )
                uploads.digests = payload
            elif kind is PartKind.ARTIFACT:
                await uploads.artifact.write(payload)
            else:
                if new.reference_sample is None:
                    raise InvalidArgument(
                        "reference_sample_chunk sent but the metadata announces no "
                        "reference_sample; describe its layout in the metadata"
                    )
                if uploads.sample is None:
                    uploads.sample = deps.blobs.upload(
                        limits.max_reference_sample_bytes, "reference sample"
                    )
                await uploads.sample.write(payload)
    except BaseException:
        for upload in uploads.all():
            await upload.discard()
        raise
    if new.reference_sample is not None and uploads.sample is None:
        await uploads.artifact.discard()
        raise InvalidArgument(
            "the metadata announces a reference_sample but no reference_sample_chunk arrived"
        )
    return uploads


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


async def _drop_unreferenced(deps: Deps, blobs: list[str]) -> None:
    """Blobs this registration created that no version uses: a failed one leaves none."""
    for sha256 in blobs:
        async with deps.unit_of_work() as uow:
            referenced = await uow.versions.blob_referenced(sha256)
        if not referenced:
            with contextlib.suppress(OSError):
                await deps.blobs.delete(sha256)
