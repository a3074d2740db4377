"""Authentication: the `authorization: Bearer ...` metadata of a call to a principal, from
static tokens or JWTs; and the refusal to serve with no identities configured."""

from __future__ import annotations

import hashlib

from flywheel_common.auth import ANONYMOUS_ADMIN, CredentialsRefused, Principal
from flywheel_common.jwt_tokens import JwtVerifier, verifier_of
from flywheel_common.settings import AuthSettings, Role, StaticToken


class NoIdentitiesConfigured(RuntimeError):
    """A service would serve everyone as admin without saying so: it refuses to start."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def static_principal(token: str, identity: Role | StaticToken) -> Principal:
    if isinstance(identity, Role):
        identity = StaticToken(role=identity)
    subject = identity.subject or f"{identity.role}-{_digest(token)[:8]}"
    return Principal.with_role(subject, identity.role, identity.models)


class Authenticator:
    """Resolves a call's authorization metadata to a principal.

    Static tokens are looked up by their sha256, so the comparison does not leak how much of
    a guessed token matched; anything else that looks like a JWT goes to the JWT verifier.
    """

    def __init__(self, settings: AuthSettings, env_prefix: str = "FLYWHEEL_<SERVICE>_") -> None:
        if not settings.has_identities and not settings.allow_anonymous:
            raise NoIdentitiesConfigured(
                "no identities configured: set "
                f"{env_prefix}AUTH__TOKENS (static tokens, JSON) or "
                f"{env_prefix}AUTH__JWT__JWKS_URL / {env_prefix}AUTH__JWT__JWKS_FILE with "
                f"{env_prefix}AUTH__JWT__ISSUER and {env_prefix}AUTH__JWT__AUDIENCE; "
                f"for local experiments only, {env_prefix}AUTH__ALLOW_ANONYMOUS=true lets "
                "every caller act as admin"
            )
        self.anonymous = settings.allow_anonymous
        self._static = {
            _digest(token): static_principal(token, identity)
            for token, identity in settings.tokens.items()
        }
        self._jwt: JwtVerifier | None = verifier_of(settings.jwt) if settings.jwt.enabled else None

    async def authenticate(self, authorization: str | None) -> Principal:
        if self.anonymous:
            return ANONYMOUS_ADMIN
        if not authorization:
            raise CredentialsRefused(
                "send metadata 'authorization: Bearer <token>'", "missing_credentials"
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise CredentialsRefused(
                "the authorization metadata must be 'Bearer <token>'", "malformed"
            )
        if self._jwt is not None:
            remembered = self._jwt.remembered(token)  # the hot path of a reused JWT
            if remembered is not None:
                return remembered
        principal = self._static.get(_digest(token))
        if principal is not None:
            return principal
        if self._jwt is not None and token.count(".") == 2:
            return await self._jwt.principal(token)
        raise CredentialsRefused("the bearer token is not valid", "invalid_token")
