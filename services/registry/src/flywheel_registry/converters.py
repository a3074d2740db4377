"""Protobuf at the edge: requests to domain values, domain values to API messages and to the
events of flywheel.model-events."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from flywheel.common.v1 import types_pb2 as common
from flywheel.registry.v1 import events_pb2 as events
from flywheel.registry.v1 import types_pb2 as types
from flywheel_common.signatures import Signature
from flywheel_common.timestamps import optional_timestamp
from flywheel_registry.domain import (
    AliasChange,
    AliasChanged,
    AliasPointer,
    Cause,
    ModelSummary,
    ModelVersion,
    ModelVersionArchived,
    ModelVersionPromoted,
    ModelVersionRegistered,
    ReferenceSampleLayout,
    RegistryEvent,
    VersionView,
)

CAUSES = {
    Cause.REQUEST: types.ALIAS_CHANGE_CAUSE_REQUEST,
    Cause.REGISTRATION: types.ALIAS_CHANGE_CAUSE_REGISTRATION,
    Cause.ROLLBACK: types.ALIAS_CHANGE_CAUSE_ROLLBACK,
}
LINEAGE_FIELDS = (
    "dataset_uri",
    "dataset_sha256",
    "code_version",
    "parent_version",
    "triggered_by",
    "training_entrypoint",
    "retrain_run_id",
)


def signature_proto(signature: Signature) -> common.ModelSignature:
    return common.ModelSignature(
        inputs=[
            common.TensorSpec(name=t.name, datatype=t.datatype, shape=t.shape)
            for t in signature.inputs
        ],
        outputs=[
            common.TensorSpec(name=t.name, datatype=t.datatype, shape=t.shape)
            for t in signature.outputs
        ],
    )


def lineage_from_proto(lineage: types.Lineage) -> dict[str, Any]:
    return {name: getattr(lineage, name) for name in LINEAGE_FIELDS if getattr(lineage, name)}


def layout_from_proto(spec: types.ReferenceSampleSpec) -> ReferenceSampleLayout:
    return ReferenceSampleLayout(
        datatype=spec.datatype,
        shape=tuple(spec.shape),
        feature_names=tuple(spec.feature_names),
        input_name=spec.input_name,
    )


def layout_to_json(layout: ReferenceSampleLayout) -> dict[str, Any]:
    return {
        "datatype": layout.datatype,
        "shape": list(layout.shape),
        "feature_names": list(layout.feature_names),
        "input_name": layout.input_name,
    }


def layout_from_json(document: dict[str, Any]) -> ReferenceSampleLayout:
    return ReferenceSampleLayout(
        datatype=document["datatype"],
        shape=tuple(document["shape"]),
        feature_names=tuple(document["feature_names"]),
        input_name=document["input_name"],
    )


def artifact_info(version: ModelVersion) -> types.ArtifactInfo:
    artifact = version.artifact
    return types.ArtifactInfo(
        sha256=artifact.sha256,
        size_bytes=artifact.size,
        format="onnx",
        onnx_ir_version=artifact.onnx_ir_version,
        onnx_opset_version=artifact.onnx_opset_version,
        producer_name=artifact.producer_name,
    )


def reference_sample_info(version: ModelVersion) -> types.ReferenceSampleInfo | None:
    sample = version.reference_sample
    if sample is None:
        return None
    return types.ReferenceSampleInfo(
        sha256=sample.sha256,
        size_bytes=sample.size,
        spec=types.ReferenceSampleSpec(**layout_to_json(sample.layout)),
    )


def version_proto(view: VersionView) -> types.ModelVersion:
    version = view.version
    return types.ModelVersion(
        model=version.model,
        version=version.version,
        description=version.description,
        status=(
            types.MODEL_VERSION_STATUS_ARCHIVED
            if version.archived
            else types.MODEL_VERSION_STATUS_READY
        ),
        params=version.params,
        metrics=version.metrics,
        tags=version.tags,
        aliases=view.aliases,
        signature=signature_proto(version.signature),
        artifact=artifact_info(version),
        reference_sample=reference_sample_info(version),
        lineage=types.Lineage(**version.lineage),
        breaking_change=version.breaking_change,
        created_by=version.created_by,
        created_at=optional_timestamp(version.created_at),
        updated_at=optional_timestamp(version.updated_at),
        archived_at=optional_timestamp(version.archived_at),
        archive_reason=version.archive_reason,
    )


def alias_proto(alias: AliasPointer) -> types.Alias:
    return types.Alias(
        name=alias.name,
        version=alias.version,
        protected=alias.protected,
        updated_by=alias.updated_by,
        updated_at=optional_timestamp(alias.updated_at),
    )


def model_proto(summary: ModelSummary) -> types.Model:
    model = summary.model
    return types.Model(
        name=model.name,
        description=model.description,
        latest_version=model.latest_version,
        version_count=summary.version_count,
        aliases=[alias_proto(model.aliases[name]) for name in sorted(model.aliases)],
        created_at=optional_timestamp(model.created_at),
        updated_at=optional_timestamp(model.updated_at),
    )


def history_proto(change: AliasChange) -> types.AliasChange:
    return types.AliasChange(
        model=change.model,
        alias=change.alias,
        version=change.version,
        previous_version=change.previous_version,
        actor=change.actor,
        reason=change.reason,
        cause=CAUSES[change.cause],
        rollout_id=change.rollout_id,
        changed_at=optional_timestamp(change.changed_at),
    )


def registered_event(event: ModelVersionRegistered) -> events.ModelVersionRegistered:
    version = event.version
    return events.ModelVersionRegistered(
        model=version.model,
        version=version.version,
        description=version.description,
        signature=signature_proto(version.signature),
        artifact=artifact_info(version),
        reference_sample=reference_sample_info(version),
        lineage=types.Lineage(**version.lineage),
        params=version.params,
        metrics=version.metrics,
        tags=version.tags,
        breaking_change=version.breaking_change,
        aliases=event.aliases,
        actor=version.created_by,
        occurred_at=optional_timestamp(version.created_at),
    )


def alias_changed_event(event: AliasChanged) -> events.AliasChanged:
    change = event.change
    return events.AliasChanged(
        model=change.model,
        alias=change.alias,
        version=change.version,
        previous_version=change.previous_version,
        protected=event.protected,
        actor=change.actor,
        reason=change.reason,
        cause=CAUSES[change.cause],
        rollout_id=change.rollout_id,
        occurred_at=optional_timestamp(change.changed_at),
    )


def promoted_event(event: ModelVersionPromoted) -> events.ModelVersionPromoted:
    change = event.change
    return events.ModelVersionPromoted(
        model=change.model,
        version=change.version,
        previous_version=change.previous_version,
        alias=change.alias,
        actor=change.actor,
        reason=change.reason,
        cause=CAUSES[change.cause],
        rollout_id=change.rollout_id,
        artifact_sha256=event.artifact_sha256,
        signature=signature_proto(event.signature),
        occurred_at=optional_timestamp(change.changed_at),
    )


def archived_event(event: ModelVersionArchived) -> events.ModelVersionArchived:
    return events.ModelVersionArchived(
        model=event.model,
        version=event.version,
        removed_aliases=event.removed_aliases,
        artifact_sha256=event.artifact_sha256,
        actor=event.actor,
        reason=event.reason,
        occurred_at=optional_timestamp(event.occurred_at),
    )


def event_message(event: RegistryEvent) -> Message:
    """The protobuf message of a domain event, as flywheel.model-events carries it."""
    match event:
        case ModelVersionRegistered():
            return registered_event(event)
        case AliasChanged():
            return alias_changed_event(event)
        case ModelVersionPromoted():
            return promoted_event(event)
        case ModelVersionArchived():
            return archived_event(event)
