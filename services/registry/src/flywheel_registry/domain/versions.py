"""A registered version: its artifact, what was said about it, and what may change later."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flywheel_common.errors import InvalidArgument
from flywheel_common.signatures import Signature
from flywheel_registry.domain.rules import MAX_MAP_ENTRIES, ReferenceSampleLayout


@dataclass(frozen=True)
class Artifact:
    """The ONNX bytes of a version, by digest, and what validating them found."""

    sha256: str
    size: int
    onnx_ir_version: int
    onnx_opset_version: int
    producer_name: str


@dataclass(frozen=True)
class ReferenceSample:
    """A sample of the training inputs, by digest, with its layout."""

    sha256: str
    size: int
    layout: ReferenceSampleLayout


@dataclass
class ModelVersion:
    """A registered version. Only its description, tags and archive state change after
    registration, and only through its model (`RegisteredModel`)."""

    model: str
    version: int
    signature: Signature
    artifact: Artifact
    created_by: str
    created_at: datetime
    updated_at: datetime
    reference_sample: ReferenceSample | None = None
    description: str = ""
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)
    breaking_change: bool = False
    idempotency_key: str = ""
    archived: bool = False
    archived_at: datetime | None = None
    archive_reason: str = ""

    def update(
        self,
        description: str | None,
        set_tags: Mapping[str, str],
        remove_tag_keys: Iterable[str],
        now: datetime,
    ) -> None:
        """A new description and tags; a key both set and removed ends up removed."""
        tags = {**self.tags, **set_tags}
        for key in remove_tag_keys:
            tags.pop(key, None)
        if len(tags) > MAX_MAP_ENTRIES:
            raise InvalidArgument(f"at most {MAX_MAP_ENTRIES} tags per version")
        if description is not None:
            self.description = description
        self.tags = dict(sorted(tags.items()))
        self.updated_at = now

    def mark_rolled_back(self, rollout_id: str, reason: str, now: datetime) -> None:
        """The deployer rolled this version back: its tags say which rollout did, and why."""
        self.tags = {
            **self.tags,
            "rolled_back": "true",
            "rolled_back_reason": reason,
            "rolled_back_rollout": rollout_id,
        }
        self.updated_at = now

    def archive(self, reason: str, now: datetime) -> None:
        self.archived = True
        self.archived_at = now
        self.archive_reason = reason
        self.updated_at = now
