"""Bearer-token authentication and roles: who is calling, and what they may do."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

from flywheel_common.errors import PermissionDenied, Unauthenticated
from flywheel_common.settings import Role


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role


ANONYMOUS_ADMIN = Principal(subject="anonymous", role=Role.ADMIN)
SYSTEM = Principal(subject="system", role=Role.ADMIN)

_current_principal: ContextVar[Principal] = ContextVar("principal", default=SYSTEM)


def current_principal() -> Principal:
    """The caller of the RPC being served (`system` outside any RPC)."""
    return _current_principal.get()


def set_current_principal(principal: Principal) -> None:
    _current_principal.set(principal)


@contextmanager
def acting_as(principal: Principal) -> Iterator[Principal]:
    """`principal` is the current caller inside the block, and the previous one after it."""
    token = _current_principal.set(principal)
    try:
        yield principal
    finally:
        _current_principal.reset(token)


def require_role(required: Role) -> Principal:
    """Raise PermissionDenied unless the current caller has at least `required`."""
    principal = current_principal()
    if not principal.role.allows(required):
        raise PermissionDenied(
            f"{principal.subject} has role {principal.role}; this needs role {required}"
        )
    return principal


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenAuthenticator:
    """Resolves `authorization: Bearer <token>` metadata to a principal.

    Tokens are looked up by their sha256 so the comparison does not leak how much of a
    guessed token matched. With no tokens configured, everyone is an anonymous admin.
    """

    def __init__(self, tokens: Mapping[str, Role]) -> None:
        self._principals = {
            _digest(token): Principal(subject=f"{role}-{_digest(token)[:8]}", role=role)
            for token, role in tokens.items()
        }

    @property
    def enabled(self) -> bool:
        return bool(self._principals)

    def authenticate(self, authorization: str | None) -> Principal:
        if not self.enabled:
            return ANONYMOUS_ADMIN
        if not authorization:
            raise Unauthenticated("send metadata 'authorization: Bearer <token>'")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("the authorization metadata must be 'Bearer <token>'")
        principal = self._principals.get(_digest(token.strip()))
        if principal is None:
            raise Unauthenticated("the bearer token is not valid")
        return principal
