"""A registered model: the numbering of its versions, its aliases, and every change of it
or its versions, each checked against the rules and recorded as the events it causes."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from flywheel_common.errors import FailedPrecondition, NotFound, PermissionDenied
from flywheel_registry.domain.events import (
    AliasChange,
    AliasChanged,
    Cause,
    ModelVersionArchived,
    ModelVersionPromoted,
    ModelVersionRegistered,
    RegistryEvent,
)
from flywheel_registry.domain.rules import (
    PRODUCTION,
    NewVersion,
    ValidatedModel,
    check_compatible_with_production,
)
from flywheel_registry.domain.versions import Artifact, ModelVersion, ReferenceSample


@dataclass(frozen=True)
class Caller:
    """Who asks for a change: the name the audit trail keeps, and whether they are an admin."""

    subject: str
    admin: bool = False


@dataclass(frozen=True)
class AliasPointer:
    name: str
    version: int
    protected: bool
    """Only the admin role moves or deletes it (a rollback moves it regardless)."""
    updated_by: str
    updated_at: datetime


@dataclass
class RegisteredModel:
    """A model: the numbering of its versions and its aliases. Every change of a model or
    its versions goes through it; it checks the rules and records in `events` what the
    change announces, in order."""

    name: str
    created_at: datetime
    updated_at: datetime
    description: str = ""
    latest_version: int = 0
    aliases: dict[str, AliasPointer] = field(default_factory=dict)
    protected_by_default: frozenset[str] = frozenset()
    """Aliases created protected unless the change says otherwise (a setting)."""
    events: list[RegistryEvent] = field(default_factory=list, compare=False, repr=False)

    def alias_version(self, alias: str) -> int:
        """The version `alias` points at; 0 when the model has no such alias."""
        pointer = self.aliases.get(alias)
        return pointer.version if pointer is not None else 0

    def aliases_of(self, version: int) -> tuple[str, ...]:
        """The aliases that point at `version`, by name."""
        return tuple(name for name in sorted(self.aliases) if self.aliases[name].version == version)

    def register(
        self,
        new: NewVersion,
        validated: ValidatedModel,
        artifact: Artifact,
        sample: ReferenceSample | None,
        *,
        production: ModelVersion | None,
        caller: Caller,
        now: datetime,
    ) -> ModelVersion:
        """The model's next version, with the aliases it asks for. Unless it declares a
        breaking change, it must serve the callers of `production` (the version alias
        `production` points at)."""
        assert self.alias_version(PRODUCTION) == (production.version if production else 0)
        if production is not None:
            check_compatible_with_production(
                production.signature, validated.signature, production.version, new.breaking_change
            )
        self.latest_version += 1
        self.updated_at = now
        version = ModelVersion(
            model=self.name,
            version=self.latest_version,
            signature=validated.signature,
            artifact=artifact,
            reference_sample=sample,
            description=new.description,
            params=dict(new.params),
            metrics=dict(sorted(new.metrics.items())),
            tags=dict(sorted(new.tags.items())),
            lineage=dict(new.lineage),
            breaking_change=new.breaking_change,
            idempotency_key=new.idempotency_key,
            created_by=caller.subject,
            created_at=now,
            updated_at=now,
        )
        self.events.append(
            ModelVersionRegistered(copy.deepcopy(version), tuple(sorted(new.aliases)))
        )
        for alias in new.aliases:
            self._point(
                alias,
                version,
                caller,
                reason="set at registration",
                cause=Cause.REGISTRATION,
                now=now,
            )
        return version

    def set_alias(
        self,
        alias: str,
        version: ModelVersion,
        *,
        caller: Caller,
        reason: str,
        now: datetime,
        expected_current: int | None = None,
        protected: bool | None = None,
    ) -> int:
        """Point `alias` at `version`; the version it pointed at before (0: none). Setting
        it as it already is changes nothing and announces nothing."""
        self.updated_at = now
        current = self.alias_version(alias)
        if expected_current is not None and expected_current != current:
            raise FailedPrecondition(
                f"alias {alias!r} points at version {current or 'nothing'}, not the expected "
                f"{expected_current or 'nothing'}; read it again and retry"
            )
        self._point(
            alias, version, caller, reason=reason, cause=Cause.REQUEST, now=now, protected=protected
        )
        return current

    def delete_alias(
        self,
        alias: str,
        *,
        caller: Caller,
        reason: str,
        now: datetime,
        expected_current: int | None,
    ) -> int:
        """Remove `alias`; the version it pointed at."""
        self.updated_at = now
        existing = self.aliases.get(alias)
        if existing is None:
            raise NotFound(f"model {self.name!r} has no alias {alias!r}")
        if expected_current is not None and expected_current != existing.version:
            raise FailedPrecondition(
                f"alias {alias!r} points at version {existing.version}, not the expected "
                f"{expected_current}; read it again and retry"
            )
        if existing.protected and not caller.admin:
            raise PermissionDenied(
                f"alias {alias!r} of {self.name!r} is protected: only the admin role deletes it"
            )
        self._remove(existing, caller, reason, now)
        return existing.version

    def update_version(
        self,
        version: ModelVersion,
        *,
        description: str | None,
        set_tags: Mapping[str, str],
        remove_tag_keys: Iterable[str],
        now: datetime,
    ) -> None:
        """A version's new description and tags (archived versions included)."""
        self._own(version)
        self.updated_at = now
        version.update(description, set_tags, remove_tag_keys, now)

    def archive(self, version: ModelVersion, *, caller: Caller, reason: str, now: datetime) -> None:
        """Retire a version: its aliases go (never `production`), and it takes no new ones."""
        self._own(version)
        self.updated_at = now
        if version.archived:
            raise FailedPrecondition(
                f"version {version.version} of {self.name!r} is archived already"
            )
        removed = self.aliases_of(version.version)
        if PRODUCTION in removed:
            raise FailedPrecondition(
                f"version {version.version} of {self.name!r} is in production; promote another "
                "version first"
            )
        for name in removed:
            self._remove(self.aliases[name], caller, f"archived: {reason}", now)
        version.archive(reason, now)
        self.events.append(
            ModelVersionArchived(
                model=self.name,
                version=version.version,
                removed_aliases=removed,
                artifact_sha256=version.artifact.sha256,
                actor=caller.subject,
                reason=reason,
                occurred_at=now,
            )
        )

    def follow_rollback(
        self,
        restored: ModelVersion | None,
        rolled_back: ModelVersion | None,
        *,
        actor: str,
        rollout_id: str,
        reason: str,
        now: datetime,
    ) -> None:
        """The deployer rolled a rollout back: `production` returns to the version it serves
        again, protected or not, and the rolled-back version's tags say why."""
        self.updated_at = now
        if restored is not None:
            self._point(
                PRODUCTION,
                restored,
                Caller(actor, admin=True),
                reason=reason or "rollout rolled back",
                cause=Cause.ROLLBACK,
                now=now,
                rollout_id=rollout_id,
            )
        if rolled_back is not None:
            self._own(rolled_back)
            rolled_back.mark_rolled_back(rollout_id, reason, now)

    def _own(self, version: ModelVersion) -> None:
        assert version.model == self.name, f"version of {version.model!r}, not of {self.name!r}"

    def _point(
        self,
        alias: str,
        version: ModelVersion,
        caller: Caller,
        *,
        reason: str,
        cause: Cause,
        now: datetime,
        protected: bool | None = None,
        rollout_id: str = "",
    ) -> None:
        self._own(version)
        if version.archived:
            raise FailedPrecondition(
                f"version {version.version} of {self.name!r} is archived and cannot take alias "
                f"{alias!r}; register or pick a live version"
            )
        existing = self.aliases.get(alias)
        if cause is not Cause.ROLLBACK:
            if existing is not None and existing.protected and not caller.admin:
                raise PermissionDenied(
                    f"alias {alias!r} of {self.name!r} is protected: only the admin role moves it"
                )
            if protected is not None and not caller.admin:
                raise PermissionDenied("only the admin role changes whether an alias is protected")
        previous = existing.version if existing is not None else 0
        if existing is None:
            now_protected = alias in self.protected_by_default if protected is None else protected
        elif previous == version.version and protected in (None, existing.protected):
            return  # already so: nothing changes, nothing is announced
        else:
            now_protected = existing.protected if protected is None else protected
        self.aliases[alias] = AliasPointer(
            alias, version.version, now_protected, caller.subject, now
        )
        change = AliasChange(
            model=self.name,
            alias=alias,
            version=version.version,
            previous_version=previous,
            actor=caller.subject,
            reason=reason,
            cause=cause,
            changed_at=now,
            rollout_id=rollout_id,
        )
        self.events.append(AliasChanged(change, now_protected))
        if alias == PRODUCTION and previous != version.version:
            self.events.append(
                ModelVersionPromoted(change, version.artifact.sha256, version.signature)
            )

    def _remove(self, pointer: AliasPointer, caller: Caller, reason: str, now: datetime) -> None:
        del self.aliases[pointer.name]
        change = AliasChange(
            model=self.name,
            alias=pointer.name,
            version=0,
            previous_version=pointer.version,
            actor=caller.subject,
            reason=reason,
            cause=Cause.REQUEST,
            changed_at=now,
        )
        self.events.append(AliasChanged(change, pointer.protected))


@dataclass(frozen=True)
class VersionView:
    """A version as callers read it: with the aliases that point at it."""

    version: ModelVersion
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True)
class ModelSummary:
    """A model as callers read it: with how many versions it has."""

    model: RegisteredModel
    version_count: int
