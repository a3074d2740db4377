"""What the registry announces on flywheel.model-events, in the past tense."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from flywheel_common.signatures import Signature
from flywheel_registry.domain.versions import ModelVersion


class Cause(StrEnum):
    """Why an alias changed."""

    REQUEST = "request"
    REGISTRATION = "registration"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class AliasChange:
    """One entry of a model's alias audit trail."""

    model: str
    alias: str
    version: int
    """0 when the alias was deleted."""
    previous_version: int
    """0 when the alias was created."""
    actor: str
    reason: str
    cause: Cause
    changed_at: datetime
    rollout_id: str = ""


@dataclass(frozen=True)
class ModelVersionRegistered:
    version: ModelVersion
    """The version as registered (a copy: later changes in the same unit do not show)."""
    aliases: tuple[str, ...]


@dataclass(frozen=True)
class AliasChanged:
    change: AliasChange
    protected: bool


@dataclass(frozen=True)
class ModelVersionPromoted:
    """Alias `production` moved to another version."""

    change: AliasChange
    artifact_sha256: str
    signature: Signature


@dataclass(frozen=True)
class ModelVersionArchived:
    model: str
    version: int
    removed_aliases: tuple[str, ...]
    artifact_sha256: str
    actor: str
    reason: str
    occurred_at: datetime


RegistryEvent = ModelVersionRegistered | AliasChanged | ModelVersionPromoted | ModelVersionArchived
