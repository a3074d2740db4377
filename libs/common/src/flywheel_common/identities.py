"""Authentication: the `authorization: Bearer ...` metadata of a call to a principal, from
static tokens or JWTs; and the refusal to serve with no identities configured."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Mapping

from flywheel_common.auth import ANONYMOUS_ADMIN, CredentialsRefused, Principal
from flywheel_common.jwt_tokens import JwtVerifier, verifier_of
from flywheel_common.settings import AuthSettings, Role, StaticToken, read_tokens_file

log = logging.getLogger(__name__)

TOKENS_FILE_CHECK_SECONDS = 1.0
"""How often a changed tokens file is looked for (one stat, on a call)."""


class NoIdentitiesConfigured(RuntimeError):
    """A service would serve everyone as admin without saying so: it refuses to start."""


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def static_principal(token: str, identity: Role | StaticToken) -> Principal:
    if isinstance(identity, Role):
        identity = StaticToken(role=identity)
    subject = identity.subject or f"{identity.role}-{_digest(token)[:8]}"
    return Principal.with_role(subject, identity.role, identity.models)


def _principals(tokens: Mapping[str, Role | StaticToken]) -> dict[str, Principal]:
    return {_digest(token): static_principal(token, identity) for token, identity in tokens.items()}


class StaticTokens:
    """Static tokens by their sha256: those of the settings, and those of the tokens file as
    it is now. The file is looked at (one stat) at most once per TOKENS_FILE_CHECK_SECONDS
    and read again when it changed, so a token is added or revoked by editing the mounted
    secret, with no restart; a file that no longer reads keeps the tokens it had, and the
    log says why. The settings' own tokens win over the file's."""

    def __init__(self, settings: AuthSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = _principals(settings.tokens)
        self._path = settings.tokens_file
        self._clock = clock
        self._file: dict[str, Principal] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._checked_at = clock()
        if self._path:
            self._stamp = self._stat()
            self._file = _principals(read_tokens_file(self._path))

    def get(self, token: str) -> Principal | None:
        if self._path:
            self._follow_the_file()
        digest = _digest(token)
        return self._settings.get(digest) or self._file.get(digest)

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            stat = os.stat(self._path)
        except OSError:
            return None
        return stat.st_mtime_ns, stat.st_size, stat.st_ino

    def _follow_the_file(self) -> None:
        now = self._clock()
        if now - self._checked_at < TOKENS_FILE_CHECK_SECONDS:
            return
        self._checked_at = now
        stamp = self._stat()
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            self._file = _principals(read_tokens_file(self._path))
        except ValueError as error:
            log.warning("tokens file not reloaded, the previous tokens stay: %s", error)
            return
        log.info("tokens file reloaded", extra={"tokens": len(self._file)})


class Authenticator:
    """Resolves a call's authorization metadata to a principal.

    Static tokens are looked up by their sha256, so the comparison does not leak how much of
    a guessed token matched; anything else that looks like a JWT goes to the JWT verifier.
    """

    def __init__(
        self,
        settings: AuthSettings,
        env_prefix: str = "FLYWHEEL_<SERVICE>_",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not settings.has_identities and not settings.allow_anonymous:
            raise NoIdentitiesConfigured(
                "no identities configured: set "
                f"{env_prefix}AUTH__TOKENS (static tokens, JSON), "
                f"{env_prefix}AUTH__TOKENS_FILE (a file of them) or "
                f"{env_prefix}AUTH__JWT__JWKS_URL / {env_prefix}AUTH__JWT__JWKS_FILE with "
                f"{env_prefix}AUTH__JWT__ISSUER and {env_prefix}AUTH__JWT__AUDIENCE; "
                f"for local experiments only, {env_prefix}AUTH__ALLOW_ANONYMOUS=true lets "
                "every caller act as admin"
            )
        self.anonymous = settings.allow_anonymous
        self._static = StaticTokens(settings, clock)
        self._jwt: JwtVerifier | None = verifier_of(settings.jwt) if settings.jwt.enabled else None

    async def authenticate(self, authorization: str | None) -> Principal:
        if self.anonymous:
            return ANONYMOUS_ADMIN
        if not authorization:
            raise CredentialsRefused(
                "send 'authorization: Bearer <token>' (gRPC metadata, or HTTP header)",
                "missing_credentials",
            )
        scheme, _, token = authorization.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise CredentialsRefused(
                "the authorization metadata or header must be 'Bearer <token>'", "malformed"
            )
        if self._jwt is not None:
            remembered = self._jwt.remembered(token)  # the hot path of a reused JWT
            if remembered is not None:
                return remembered
        principal = self._static.get(token)
        if principal is not None:
            return principal
        if self._jwt is not None and token.count(".") == 2:
            return await self._jwt.principal(token)
        raise CredentialsRefused("the bearer token is not valid", "invalid_token")
