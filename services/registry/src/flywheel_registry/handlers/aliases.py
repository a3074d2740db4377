"""Moving and deleting aliases; setting `production` is a promotion."""

from __future__ import annotations

from dataclasses import dataclass

from flywheel_registry.domain import AliasPointer, check_name, check_text, check_version
from flywheel_registry.handlers.ports import Deps, caller, load_version, lock_model


@dataclass(frozen=True)
class SetAlias:
    model: str
    alias: str
    version: int
    reason: str = ""
    expected_current: int | None = None
    """Compare-and-set: the version the caller believes the alias points at (0: none)."""
    protected: bool | None = None
    """Make the alias protected or not (admin only); None leaves it as it is."""


@dataclass(frozen=True)
class DeleteAlias:
    model: str
    alias: str
    reason: str = ""
    expected_current: int | None = None


async def set_alias(deps: Deps, command: SetAlias) -> tuple[AliasPointer, int]:
    """The alias as it now is, and the version it pointed at before (0: none)."""
    check_name("alias", command.alias)
    check_version(command.version)
    check_text("reason", command.reason)
    async with deps.unit_of_work() as uow:
        model = await lock_model(deps, uow, command.model)
        version = await load_version(uow, model, command.version)
        previous = model.set_alias(
            command.alias,
            version,
            caller=caller(model.name),
            reason=command.reason,
            now=deps.clock(),
            expected_current=command.expected_current,
            protected=command.protected,
        )
        uow.models.save(model)
    return model.aliases[command.alias], previous


async def delete_alias(deps: Deps, command: DeleteAlias) -> int:
    """The version the alias pointed at."""
    check_name("alias", command.alias)
    check_text("reason", command.reason)
    async with deps.unit_of_work() as uow:
        model = await lock_model(deps, uow, command.model)
        previous = model.delete_alias(
            command.alias,
            caller=caller(model.name),
            reason=command.reason,
            now=deps.clock(),
            expected_current=command.expected_current,
        )
        uow.models.save(model)
    return previous
