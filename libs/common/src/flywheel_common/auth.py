"""Who is calling and what they may do: grants of a role on model name patterns, checked per
call, and every refusal counted and logged without secrets."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

from opentelemetry import metrics

from flywheel_common.errors import PermissionDenied, Unauthenticated
from flywheel_common.settings import ALL_MODELS, Role, check_model_pattern

T = TypeVar("T")

log = logging.getLogger(__name__)
_denied = metrics.get_meter(__name__).create_counter(
    "flywheel.auth.denied",
    description="Calls refused as UNAUTHENTICATED or PERMISSION_DENIED, by method, code, reason",
)


@dataclass(frozen=True)
class Grant:
    """A role on the models whose names match `pattern`: an exact name, a prefix ending in
    `*` (`fraud-*`), or `*` for every model."""

    role: Role
    pattern: str = ALL_MODELS

    def covers(self, model: str) -> bool:
        if self.pattern.endswith("*"):
            return model.startswith(self.pattern[:-1])
        return model == self.pattern

    def __str__(self) -> str:
        return f"{self.role}:{self.pattern}"

    @classmethod
    def parse(cls, text: str) -> Grant:
        """`role` (on every model) or `role:pattern`, for example `writer:fraud-*`."""
        role, colon, pattern = text.strip().partition(":")
        pattern = pattern.strip() if colon else ALL_MODELS
        return cls(Role(role.strip()), check_model_pattern(pattern))


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a subject for logs and audit fields, and its grants."""

    subject: str
    grants: tuple[Grant, ...]

    @classmethod
    def with_role(
        cls, subject: str, role: Role, models: Iterable[str] = (ALL_MODELS,)
    ) -> Principal:
        return cls(subject, tuple(Grant(role, check_model_pattern(m)) for m in models))

    def role_on(self, model: str) -> Role | None:
        """The highest role the caller holds on `model`, None when it holds none."""
        roles = [grant.role for grant in self.grants if grant.covers(model)]
        return max(roles, key=Role.rank) if roles else None

    def allows(self, required: Role, model: str) -> bool:
        return any(g.role.allows(required) and g.covers(model) for g in self.grants)

    def allows_some_model(self, required: Role) -> bool:
        return any(grant.role.allows(required) for grant in self.grants)

    def allows_every_model(self, required: Role) -> bool:
        return any(g.role.allows(required) and g.pattern == ALL_MODELS for g in self.grants)

    def describe_grants(self) -> str:
        return ", ".join(str(grant) for grant in self.grants) or "no grants"


ANONYMOUS_ADMIN = Principal.with_role("anonymous", Role.ADMIN)
SYSTEM = Principal.with_role("system", Role.ADMIN)


class CredentialsRefused(Unauthenticated):
    """No credentials, or ones that do not prove who the caller is; `reason` is a short
    label for the denial counter (`missing`, `expired`, `wrong_audience`...)."""

    def __init__(self, message: str, reason: str = "refused") -> None:
        super().__init__(message)
        self.reason = reason


class AccessRefused(PermissionDenied):
    """An authenticated caller without the grant a call needs."""

    def __init__(self, message: str, reason: str = "refused") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class _Call:
    principal: Principal
    method: str


_OUTSIDE_ANY_CALL = _Call(SYSTEM, "")
_current_call: ContextVar[_Call] = ContextVar("call", default=_OUTSIDE_ANY_CALL)


def current_principal() -> Principal:
    """The caller of the RPC being served (`system` outside any RPC)."""
    return _current_call.get().principal


def set_current_principal(principal: Principal, method: str = "") -> None:
    _current_call.set(_Call(principal, method))


@contextmanager
def acting_as(principal: Principal) -> Iterator[Principal]:
    """`principal` is the current caller inside the block, and the previous one after it."""
    token = _current_call.set(_Call(principal, ""))
    try:
        yield principal
    finally:
        _current_call.reset(token)


def missing_grant(
    principal: Principal, required: Role, model: str | None, action: str = "this call"
) -> AccessRefused:
    """The refusal of `action` to a caller without `required` on `model` (None: on any)."""
    held = f"{principal.subject} holds {principal.describe_grants()}"
    if model is None:
        return AccessRefused(f"{action} needs role {required} on some model; {held}", "no_grant")
    return AccessRefused(
        f"{action} needs role {required} on model {model!r}; {held}", "model_not_granted"
    )


def require_role(required: Role, model: str | None = None) -> Principal:
    """The current caller, when it holds `required` on `model` (with None: on every model);
    else PermissionDenied, counted and logged. Use cases call it when the model is known
    only after a lookup (a rollout or a run named by its id)."""
    call = _current_call.get()
    principal = call.principal
    action = call.method.rpartition("/")[2] or "this call"
    if model is None:
        if principal.allows_every_model(required):
            return principal
        refusal = AccessRefused(
            f"{action} needs role {required} on every model; "
            f"{principal.subject} holds {principal.describe_grants()}",
            "no_grant",
        )
    elif principal.allows(required, model):
        return principal
    else:
        refusal = missing_grant(principal, required, model, action)
    record_denial(call.method, refusal, principal.subject, model)
    raise refusal


def can_read(model: str) -> bool:
    """Whether the current caller may see `model`: listings keep only such models."""
    return current_principal().allows(Role.READER, model)


def record_denial(
    method: str,
    refusal: Unauthenticated | PermissionDenied,
    subject: str | None,
    model: str | None = None,
) -> None:
    """Count and log one refused call. The message and reason never carry a credential."""
    code = "UNAUTHENTICATED" if isinstance(refusal, Unauthenticated) else "PERMISSION_DENIED"
    reason = getattr(refusal, "reason", "rule")
    _denied.add(1, {"rpc.method": method, "code": code, "reason": reason})
    log.warning(
        "auth denied",
        extra={
            "method": method,
            "subject": subject or "unknown",
            "model": model or "",
            "decision": "deny",
            "code": code,
            "reason": reason,
            "detail": refusal.message,
        },
    )


def log_allowed(method: str, principal: Principal, model: str | None) -> None:
    log.debug(
        "auth allowed",
        extra={
            "method": method,
            "subject": principal.subject,
            "model": model or "",
            "decision": "allow",
        },
    )


def visible(items: Iterable[T], model_of: Callable[[T], str]) -> list[T]:
    """The items about models the current caller may read: listings answer with these only
    (a page can then hold fewer items than asked for; its next-page token still works)."""
    principal = current_principal()
    if principal.allows_every_model(Role.READER):
        return list(items)
    return [item for item in items if principal.allows(Role.READER, model_of(item))]
