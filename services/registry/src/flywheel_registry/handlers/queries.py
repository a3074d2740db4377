"""Reading models, versions, aliases and their history, a page at a time; streaming a
version's artifact and reference sample."""

from __future__ import annotations

from collections.abc import AsyncIterator

from flywheel_common.errors import InvalidArgument, NotFound
from flywheel_common.names import check_prefix
from flywheel_registry.domain import (
    AliasChange,
    ModelSummary,
    ModelVersion,
    SearchQuery,
    VersionView,
    check_name,
    decode_page_token,
    encode_page_token,
    page_size,
    query_fingerprint,
)
from flywheel_registry.handlers.ports import Deps, load_model, load_version, view

Page = tuple[list[VersionView], str]
"""Versions and the token of the next page ("" at the end)."""


async def get_model(deps: Deps, name: str) -> ModelSummary:
    async with deps.unit_of_work() as uow:
        model = await load_model(uow, name)
        return ModelSummary(model, await uow.models.version_count(name))


async def list_models(
    deps: Deps, requested_size: int, token: str, prefix: str
) -> tuple[list[ModelSummary], str]:
    check_prefix("name_prefix", prefix)
    size = page_size(requested_size)
    fingerprint = query_fingerprint({"list_models": prefix})
    after = decode_page_token(token, fingerprint, str)
    async with deps.unit_of_work() as uow:
        found = await uow.models.page(prefix, after, size + 1)
    more = len(found) > size
    return found[:size], encode_page_token(found[size - 1].model.name, fingerprint) if more else ""


async def get_version(deps: Deps, model_name: str, version: int) -> VersionView:
    async with deps.unit_of_work() as uow:
        model = await load_model(uow, model_name)
        return view(model, await load_version(uow, model, version))


async def list_versions(
    deps: Deps, model_name: str, requested_size: int, token: str, include_archived: bool
) -> Page:
    size = page_size(requested_size)
    fingerprint = query_fingerprint({"list_versions": model_name, "archived": include_archived})
    before = decode_page_token(token, fingerprint)
    async with deps.unit_of_work() as uow:
        model = await load_model(uow, model_name)
        found = await uow.versions.page(model.name, before, size + 1, include_archived)
    next_token = (
        encode_page_token(found[size - 1].version, fingerprint) if len(found) > size else ""
    )
    return [view(model, version) for version in found[:size]], next_token


async def search(deps: Deps, query: SearchQuery) -> Page:
    size = page_size(query.page_size)
    fingerprint = query_fingerprint(query.fingerprint())
    offset = int(decode_page_token(query.page_token, fingerprint) or 0)
    query.check()
    async with deps.unit_of_work() as uow:
        found = await uow.versions.search(query, offset, size + 1)
        models = await uow.models.many({version.model for version in found})
    next_token = encode_page_token(offset + size, fingerprint) if len(found) > size else ""
    return [view(models[version.model], version) for version in found[:size]], next_token


async def version_by_alias(deps: Deps, model_name: str, alias: str) -> VersionView:
    check_name("alias", alias)
    async with deps.unit_of_work() as uow:
        model = await load_model(uow, model_name)
        pointer = model.aliases.get(alias)
        if pointer is None:
            raise NotFound(f"model {model_name!r} has no alias {alias!r}")
        return view(model, await load_version(uow, model, pointer.version))


async def alias_history(
    deps: Deps, model_name: str, alias: str, requested_size: int, token: str
) -> tuple[list[AliasChange], str]:
    """The model's alias changes (of `alias` only, unless it is ""), newest first."""
    if alias:
        check_name("alias", alias)
    size = page_size(requested_size)
    fingerprint = query_fingerprint({"history": model_name, "alias": alias})
    before = decode_page_token(token, fingerprint)
    async with deps.unit_of_work() as uow:
        model = await load_model(uow, model_name)
        found = await uow.history.page(model.name, alias, before, size + 1)
    next_token = encode_page_token(found[size - 1][0], fingerprint) if len(found) > size else ""
    return [change for _, change in found[:size]], next_token


async def open_artifact(
    deps: Deps, model_name: str, version: int, offset: int
) -> tuple[ModelVersion, AsyncIterator[bytes]]:
    """The version, and its artifact's bytes from `offset`, in chunks."""
    found = (await get_version(deps, model_name, version)).version
    if offset < 0 or offset > found.artifact.size:
        raise InvalidArgument(
            f"offset must be between 0 and the artifact size {found.artifact.size}, not {offset}"
        )
    return found, deps.blobs.read(found.artifact.sha256, offset, deps.limits.chunk_bytes)


async def open_reference_sample(
    deps: Deps, model_name: str, version: int
) -> tuple[ModelVersion, AsyncIterator[bytes]]:
    found = (await get_version(deps, model_name, version)).version
    if found.reference_sample is None:
        raise NotFound(
            f"model {model_name!r} version {version} was registered without a reference sample"
        )
    chunks = deps.blobs.read(found.reference_sample.sha256, 0, deps.limits.chunk_bytes)
    return found, chunks
