"""Changing a registered version: its description and tags, or archiving it."""

from __future__ import annotations

from dataclasses import dataclass, field

from flywheel_registry.domain import ModelVersion, VersionView, check_key, check_text
from flywheel_registry.handlers.ports import Deps, caller, load_version, lock_model, view


@dataclass(frozen=True)
class UpdateVersion:
    model: str
    version: int
    description: str | None = None
    """None leaves the description as it is."""
    set_tags: dict[str, str] = field(default_factory=dict)
    remove_tag_keys: tuple[str, ...] = ()


async def update_version(deps: Deps, command: UpdateVersion) -> VersionView:
    if command.description is not None:
        check_text("description", command.description)
    for key in [*command.set_tags, *command.remove_tag_keys]:
        check_key("tags", key)
    for key, value in command.set_tags.items():
        check_text(f"tags[{key[:40]!r}]", value)
    async with deps.unit_of_work() as uow:
        model = await lock_model(deps, uow, command.model)
        version = await load_version(uow, model, command.version)
        model.update_version(
            version,
            description=command.description,
            set_tags=command.set_tags,
            remove_tag_keys=command.remove_tag_keys,
            now=deps.clock(),
        )
        uow.versions.save(version)
        uow.models.save(model)
    return view(model, version)


async def archive_version(deps: Deps, model_name: str, version: int, reason: str) -> ModelVersion:
    """Retire a version; the aliases that pointed at it go (ModelVersionArchived names them)."""
    check_text("reason", reason)
    async with deps.unit_of_work() as uow:
        model = await lock_model(deps, uow, model_name)
        found = await load_version(uow, model, version)
        model.archive(found, caller=caller(model.name), reason=reason, now=deps.clock())
        uow.versions.save(found)
        uow.models.save(model)
    return found
