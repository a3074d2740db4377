"""Rows to protobuf: API messages and the events of flywheel.model-events."""

from __future__ import annotations

from typing import Any

from flywheel.common.v1 import types_pb2 as common
from flywheel.registry.v1 import events_pb2 as events
from flywheel.registry.v1 import types_pb2 as types
from flywheel_common.signatures import Signature
from flywheel_common.timestamps import optional_timestamp
from flywheel_registry.domain import ReferenceSampleLayout
from flywheel_registry.storage import AliasHistoryRow, AliasRow, ModelRow, VersionRow

CAUSES = {
    "request": types.ALIAS_CHANGE_CAUSE_REQUEST,
    "registration": types.ALIAS_CHANGE_CAUSE_REGISTRATION,
    "rollback": types.ALIAS_CHANGE_CAUSE_ROLLBACK,
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


def signature_proto(signature: dict[str, Any]) -> common.ModelSignature:
    parsed = Signature.from_json(signature)
    return common.ModelSignature(
        inputs=[
            common.TensorSpec(name=t.name, datatype=t.datatype, shape=t.shape)
            for t in parsed.inputs
        ],
        outputs=[
            common.TensorSpec(name=t.name, datatype=t.datatype, shape=t.shape)
            for t in parsed.outputs
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


def artifact_info(row: VersionRow) -> types.ArtifactInfo:
    return types.ArtifactInfo(
        sha256=row.artifact_sha256,
        size_bytes=row.artifact_size,
        format="onnx",
        onnx_ir_version=row.onnx_ir_version,
        onnx_opset_version=row.onnx_opset_version,
        producer_name=row.producer_name,
    )


def reference_sample_info(row: VersionRow) -> types.ReferenceSampleInfo | None:
    if not row.reference_sample_sha256 or row.reference_sample_spec is None:
        return None
    return types.ReferenceSampleInfo(
        sha256=row.reference_sample_sha256,
        size_bytes=row.reference_sample_size,
        spec=types.ReferenceSampleSpec(**row.reference_sample_spec),
    )


def version_proto(row: VersionRow, aliases: list[str]) -> types.ModelVersion:
    return types.ModelVersion(
        model=row.model_name,
        version=row.version,
        description=row.description,
        status=(
            types.MODEL_VERSION_STATUS_ARCHIVED
            if row.archived
            else types.MODEL_VERSION_STATUS_READY
        ),
        params=row.params,
        metrics={metric.name: metric.value for metric in row.metrics},
        tags=row.tag_map,
        aliases=aliases,
        signature=signature_proto(row.signature),
        artifact=artifact_info(row),
        reference_sample=reference_sample_info(row),
        lineage=types.Lineage(**row.lineage),
        breaking_change=row.breaking_change,
        created_by=row.created_by,
        created_at=optional_timestamp(row.created_at),
        updated_at=optional_timestamp(row.updated_at),
        archived_at=optional_timestamp(row.archived_at),
        archive_reason=row.archive_reason,
    )


def alias_proto(row: AliasRow) -> types.Alias:
    return types.Alias(
        name=row.name,
        version=row.version,
        protected=row.protected,
        updated_by=row.updated_by,
        updated_at=optional_timestamp(row.updated_at),
    )


def model_proto(row: ModelRow, version_count: int) -> types.Model:
    return types.Model(
        name=row.name,
        description=row.description,
        latest_version=row.latest_version,
        version_count=version_count,
        aliases=[alias_proto(alias) for alias in row.aliases],
        created_at=optional_timestamp(row.created_at),
        updated_at=optional_timestamp(row.updated_at),
    )


def history_proto(row: AliasHistoryRow) -> types.AliasChange:
    return types.AliasChange(
        model=row.model_name,
        alias=row.alias,
        version=row.version,
        previous_version=row.previous_version,
        actor=row.actor,
        reason=row.reason,
        cause=CAUSES[row.cause],
        rollout_id=row.rollout_id,
        changed_at=optional_timestamp(row.changed_at),
    )


def registered_event(row: VersionRow, aliases: list[str]) -> events.ModelVersionRegistered:
    return events.ModelVersionRegistered(
        model=row.model_name,
        version=row.version,
        description=row.description,
        signature=signature_proto(row.signature),
        artifact=artifact_info(row),
        reference_sample=reference_sample_info(row),
        lineage=types.Lineage(**row.lineage),
        params=row.params,
        metrics={metric.name: metric.value for metric in row.metrics},
        tags=row.tag_map,
        breaking_change=row.breaking_change,
        aliases=aliases,
        actor=row.created_by,
        occurred_at=optional_timestamp(row.created_at),
    )


def alias_changed_event(change: AliasHistoryRow, protected: bool) -> events.AliasChanged:
    return events.AliasChanged(
        model=change.model_name,
        alias=change.alias,
        version=change.version,
        previous_version=change.previous_version,
        protected=protected,
        actor=change.actor,
        reason=change.reason,
        cause=CAUSES[change.cause],
        rollout_id=change.rollout_id,
        occurred_at=optional_timestamp(change.changed_at),
    )


def promoted_event(change: AliasHistoryRow, version: VersionRow) -> events.ModelVersionPromoted:
    return events.ModelVersionPromoted(
        model=change.model_name,
        version=change.version,
        previous_version=change.previous_version,
        alias=change.alias,
        actor=change.actor,
        reason=change.reason,
        cause=CAUSES[change.cause],
        rollout_id=change.rollout_id,
        artifact_sha256=version.artifact_sha256,
        signature=signature_proto(version.signature),
        occurred_at=optional_timestamp(change.changed_at),
    )


def archived_event(
    row: VersionRow, removed_aliases: list[str], actor: str
) -> events.ModelVersionArchived:
    return events.ModelVersionArchived(
        model=row.model_name,
        version=row.version,
        removed_aliases=removed_aliases,
        artifact_sha256=row.artifact_sha256,
        actor=actor,
        reason=row.archive_reason,
        occurred_at=optional_timestamp(row.archived_at),
    )
