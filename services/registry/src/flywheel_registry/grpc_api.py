"""gRPC transport of the registry: decode the request, call the use case, encode the reply."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from flywheel.registry.v1 import registry_pb2 as pb
from flywheel.registry.v1 import registry_pb2_grpc as pb_grpc
from flywheel_common.auth import require_role, visible
from flywheel_common.errors import InvalidArgument
from flywheel_common.grpc_server import Scope, Unscoped, model_field
from flywheel_common.settings import Role
from flywheel_common.timestamps import datetime_of
from flywheel_registry import converters
from flywheel_registry.domain import (
    MetricCondition,
    NewVersion,
    OrderKey,
    SearchQuery,
    VersionView,
)
from flywheel_registry.handlers import aliases, queries, versions
from flywheel_registry.handlers.ports import Deps
from flywheel_registry.handlers.registration import Digests, Part, PartKind, register

SERVICE_NAME = "flywheel.registry.v1.RegistryService"
# Reads need `reader` and changes `writer` (the shared default), on the model the request
# names; protected aliases need `admin` on the model, checked per alias in the use case.
METHOD_ROLES: dict[str, Role] = {}
_MODEL = model_field("model")
METHOD_SCOPES: dict[str, Scope] = {
    "RegisterModelVersion": model_field("metadata.model"),
    "GetModel": model_field("name"),
    "ListModels": Unscoped.FILTERED,
    "GetModelVersion": _MODEL,
    "ListModelVersions": _MODEL,
    "SearchModelVersions": Unscoped.FILTERED,
    "SetAlias": _MODEL,
    "DeleteAlias": _MODEL,
    "GetModelVersionByAlias": _MODEL,
    "GetAliasHistory": _MODEL,
    "UpdateModelVersion": _MODEL,
    "ArchiveModelVersion": _MODEL,
    "GetArtifact": _MODEL,
    "GetReferenceSample": _MODEL,
}

_COMPARISONS = {
    pb.COMPARISON_OPERATOR_LESS: "<",
    pb.COMPARISON_OPERATOR_LESS_OR_EQUAL: "<=",
    pb.COMPARISON_OPERATOR_EQUAL: "==",
    pb.COMPARISON_OPERATOR_GREATER_OR_EQUAL: ">=",
    pb.COMPARISON_OPERATOR_GREATER: ">",
}
_SORT_FIELDS = {
    pb.SORT_FIELD_UNSPECIFIED: "created_at",
    pb.SORT_FIELD_CREATED_AT: "created_at",
    pb.SORT_FIELD_VERSION: "version",
    pb.SORT_FIELD_MODEL: "model",
    pb.SORT_FIELD_METRIC: "metric",
}


def _new_version(request: pb.RegisterModelVersionRequest) -> NewVersion:
    if request.WhichOneof("payload") != "metadata":
        raise InvalidArgument("the first message of RegisterModelVersion must carry metadata")
    meta = request.metadata
    return NewVersion(
        model=meta.model,
        description=meta.description,
        model_description=meta.model_description,
        params=dict(meta.params),
        metrics=dict(meta.metrics),
        tags=dict(meta.tags),
        lineage=converters.lineage_from_proto(meta.lineage),
        idempotency_key=meta.idempotency_key,
        breaking_change=meta.breaking_change,
        reference_sample=(
            converters.layout_from_proto(meta.reference_sample)
            if meta.HasField("reference_sample")
            else None
        ),
        aliases=tuple(meta.aliases),
    )


async def _parts(requests: AsyncIterator[pb.RegisterModelVersionRequest]) -> AsyncIterator[Part]:
    async for request in requests:
        kind = request.WhichOneof("payload")
        if kind == "artifact_chunk":
            yield PartKind.ARTIFACT, request.artifact_chunk
        elif kind == "reference_sample_chunk":
            yield PartKind.SAMPLE, request.reference_sample_chunk
        elif kind == "expected_digests":
            digests = request.expected_digests
            yield (
                PartKind.DIGESTS,
                Digests(digests.artifact_sha256.lower(), digests.reference_sample_sha256.lower()),
            )
        elif kind == "metadata":
            raise InvalidArgument("metadata must be sent once, as the first message")
        else:
            raise InvalidArgument("a RegisterModelVersion message carries no payload")


def _search_query(request: pb.SearchModelVersionsRequest) -> SearchQuery:
    conditions = []
    for condition in request.metric_filters:
        if condition.comparison not in _COMPARISONS:
            raise InvalidArgument(f"metric filter on {condition.metric!r} needs a comparison")
        conditions.append(
            MetricCondition(condition.metric, _COMPARISONS[condition.comparison], condition.value)
        )
    order = []
    for key in request.order_by:
        if key.field not in _SORT_FIELDS:
            raise InvalidArgument(f"unknown sort field {key.field}")
        order.append(OrderKey(_SORT_FIELDS[key.field], key.metric, key.descending))
    return SearchQuery(
        models=tuple(request.models),
        tags=tuple(sorted(request.tags.items())),
        metrics=tuple(conditions),
        aliases=tuple(request.aliases),
        created_after=(
            datetime_of(request.created_after, "created_after")
            if request.HasField("created_after")
            else None
        ),
        created_before=(
            datetime_of(request.created_before, "created_before")
            if request.HasField("created_before")
            else None
        ),
        include_archived=request.include_archived,
        order_by=tuple(order),
        page_size=request.page_size,
        page_token=request.page_token,
    )


class RegistryServicer(pb_grpc.RegistryServiceServicer):
    def __init__(self, deps: Deps) -> None:
        self._deps = deps

    async def RegisterModelVersion(
        self, request_iterator: AsyncIterator[pb.RegisterModelVersionRequest], context: Any
    ) -> pb.RegisterModelVersionResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None:
            raise InvalidArgument("RegisterModelVersion received no messages")
        registration = await register(self._deps, _new_version(first), _parts(request_iterator))
        return pb.RegisterModelVersionResponse(
            model_version=converters.version_proto(registration.version),
            replayed=registration.replayed,
        )

    async def GetModel(self, request: pb.GetModelRequest, context: Any) -> pb.GetModelResponse:
        summary = await queries.get_model(self._deps, request.name)
        return pb.GetModelResponse(model=converters.model_proto(summary))

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Any
    ) -> pb.ListModelsResponse:
        found, token = await queries.list_models(
            self._deps, request.page_size, request.page_token, request.name_prefix
        )
        return pb.ListModelsResponse(
            models=visible(
                [converters.model_proto(summary) for summary in found], lambda m: m.name
            ),
            next_page_token=token,
        )

    async def GetModelVersion(
        self, request: pb.GetModelVersionRequest, context: Any
    ) -> pb.GetModelVersionResponse:
        found = await queries.get_version(self._deps, request.model, request.version)
        return pb.GetModelVersionResponse(model_version=converters.version_proto(found))

    async def ListModelVersions(
        self, request: pb.ListModelVersionsRequest, context: Any
    ) -> pb.ListModelVersionsResponse:
        found, token = await queries.list_versions(
            self._deps,
            request.model,
            request.page_size,
            request.page_token,
            request.include_archived,
        )
        return pb.ListModelVersionsResponse(
            model_versions=[converters.version_proto(each) for each in found],
            next_page_token=token,
        )

    async def SearchModelVersions(
        self, request: pb.SearchModelVersionsRequest, context: Any
    ) -> pb.SearchModelVersionsResponse:
        for model in request.models:
            require_role(Role.READER, model)
        found, token = await queries.search(self._deps, _search_query(request))
        return pb.SearchModelVersionsResponse(
            model_versions=visible(
                [converters.version_proto(each) for each in found], lambda v: v.model
            ),
            next_page_token=token,
        )

    async def SetAlias(self, request: pb.SetAliasRequest, context: Any) -> pb.SetAliasResponse:
        command = aliases.SetAlias(
            request.model,
            request.alias,
            request.version,
            request.reason,
            expected_current=(
                request.expected_current_version
                if request.HasField("expected_current_version")
                else None
            ),
            protected=request.protected if request.HasField("protected") else None,
        )
        alias, previous = await aliases.set_alias(self._deps, command)
        return pb.SetAliasResponse(alias=converters.alias_proto(alias), previous_version=previous)

    async def DeleteAlias(
        self, request: pb.DeleteAliasRequest, context: Any
    ) -> pb.DeleteAliasResponse:
        command = aliases.DeleteAlias(
            request.model,
            request.alias,
            request.reason,
            request.expected_current_version
            if request.HasField("expected_current_version")
            else None,
        )
        previous = await aliases.delete_alias(self._deps, command)
        return pb.DeleteAliasResponse(previous_version=previous)

    async def GetModelVersionByAlias(
        self, request: pb.GetModelVersionByAliasRequest, context: Any
    ) -> pb.GetModelVersionByAliasResponse:
        found = await queries.version_by_alias(self._deps, request.model, request.alias)
        return pb.GetModelVersionByAliasResponse(model_version=converters.version_proto(found))

    async def GetAliasHistory(
        self, request: pb.GetAliasHistoryRequest, context: Any
    ) -> pb.GetAliasHistoryResponse:
        changes, token = await queries.alias_history(
            self._deps, request.model, request.alias, request.page_size, request.page_token
        )
        return pb.GetAliasHistoryResponse(
            changes=[converters.history_proto(change) for change in changes],
            next_page_token=token,
        )

    async def UpdateModelVersion(
        self, request: pb.UpdateModelVersionRequest, context: Any
    ) -> pb.UpdateModelVersionResponse:
        command = versions.UpdateVersion(
            request.model,
            request.version,
            request.description if request.HasField("description") else None,
            dict(request.set_tags),
            tuple(request.remove_tag_keys),
        )
        found = await versions.update_version(self._deps, command)
        return pb.UpdateModelVersionResponse(model_version=converters.version_proto(found))

    async def ArchiveModelVersion(
        self, request: pb.ArchiveModelVersionRequest, context: Any
    ) -> pb.ArchiveModelVersionResponse:
        archived = await versions.archive_version(
            self._deps, request.model, request.version, request.reason
        )
        return pb.ArchiveModelVersionResponse(
            model_version=converters.version_proto(VersionView(archived))
        )

    async def GetArtifact(
        self, request: pb.GetArtifactRequest, context: Any
    ) -> AsyncIterator[pb.GetArtifactResponse]:
        found, chunks = await queries.open_artifact(
            self._deps, request.model, request.version, request.offset
        )
        offset = request.offset
        first: pb.GetArtifactResponse | None = pb.GetArtifactResponse(
            artifact=converters.artifact_info(found), offset=offset
        )
        async for chunk in chunks:
            if first is not None:
                first.chunk = chunk
                yield first
                first = None
            else:
                yield pb.GetArtifactResponse(chunk=chunk, offset=offset)
            offset += len(chunk)
        if first is not None:  # offset at the end: still say what the artifact is
            yield first

    async def GetReferenceSample(
        self, request: pb.GetReferenceSampleRequest, context: Any
    ) -> AsyncIterator[pb.GetReferenceSampleResponse]:
        found, chunks = await queries.open_reference_sample(
            self._deps, request.model, request.version
        )
        offset = 0
        info = converters.reference_sample_info(found)
        async for chunk in chunks:
            yield pb.GetReferenceSampleResponse(
                reference_sample=info if offset == 0 else None, chunk=chunk, offset=offset
            )
            offset += len(chunk)
