"""Contract values shared by the converters: enum members by name, timestamps, drift
severities and alert kinds."""

from __future__ import annotations

from datetime import datetime
from enum import Enum
from typing import Any, TypeVar

from flywheel.drift.v1 import types_pb2 as drift_types
from flywheel_common.errors import InvalidArgument
from flywheel_common.timestamps import datetime_of
from flywheel_retrain.domain import Severity

E = TypeVar("E", bound=Enum)

SEVERITIES = {
    drift_types.SEVERITY_UNSPECIFIED: Severity.NONE,
    drift_types.SEVERITY_LOW: Severity.LOW,
    drift_types.SEVERITY_MEDIUM: Severity.MEDIUM,
    drift_types.SEVERITY_HIGH: Severity.HIGH,
    drift_types.SEVERITY_CRITICAL: Severity.CRITICAL,
}
SEVERITY_NUMBERS = {severity: number for number, severity in SEVERITIES.items()}


def enum_member(wrapper: Any, prefix: str, domain: type[E], number: int, what: str) -> E:
    """The domain member named like the contract's value `number`; INVALID_ARGUMENT
    (`what` names the field and its type) for a number the contract does not have."""
    try:
        return domain[wrapper.Name(number).removeprefix(prefix)]
    except (ValueError, KeyError):
        raise InvalidArgument(f"{what.format(number)}") from None


def enum_number(wrapper: Any, prefix: str, member: Enum) -> Any:
    return wrapper.Value(prefix + member.name)


def time_of(message: Any, name: str) -> datetime | None:
    return datetime_of(getattr(message, name), name) if message.HasField(name) else None


def alert_kind(kind: int) -> str:
    try:
        name = drift_types.AlertKind.Name(drift_types.AlertKind.ValueType(kind))
    except ValueError:
        raise InvalidArgument(f"alert kind {kind} is not an AlertKind") from None
    return name.removeprefix("ALERT_KIND_").lower()


def alert_kind_number(kind: str) -> drift_types.AlertKind.ValueType:
    return drift_types.AlertKind.Value(f"ALERT_KIND_{kind.upper()}")
