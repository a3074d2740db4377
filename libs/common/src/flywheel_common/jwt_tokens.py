"""Bearer JWTs: keys from a JWKS (file or URL), signature and claim checks, grants from a claim.

PyJWT does the cryptography and claim validation; this module adds what a gRPC server needs
around it: keys fetched off the event loop with a bounded refresh on unknown key ids, and a
cache of verified tokens so a client reusing its token pays the signature check once.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from flywheel_common.auth import CredentialsRefused, Grant, Principal
from flywheel_common.errors import Unavailable
from flywheel_common.settings import JwtSettings

log = logging.getLogger(__name__)

KeyLoader = Callable[[], Any]
"""Reads the JWKS document (a JSON object with `keys`)."""

# The key type each algorithm family signs with: a token cannot pick a key of another type.
_KEY_TYPE_OF_FAMILY = {"RS": "RSA", "PS": "RSA", "ES": "EC", "Ed": "OKP"}


def file_loader(path: str) -> KeyLoader:
    return lambda: json.loads(Path(path).read_text())


def url_loader(url: str, timeout_seconds: float) -> KeyLoader:
    # PyJWKClient only fetches here (no redirects, http(s) only); caching is JwksKeys' job.
    client = jwt.PyJWKClient(url, cache_jwk_set=False, timeout=timeout_seconds)
    return client.fetch_data


@dataclass(frozen=True)
class SigningKey:
    jwk: jwt.PyJWK
    algorithm: str | None
    """The `alg` the JWKS pins the key to, if any."""

    def signs_with(self, algorithm: str) -> bool:
        family_key_type = _KEY_TYPE_OF_FAMILY.get(algorithm[:2])
        return self.jwk.key_type == family_key_type and self.algorithm in (None, algorithm)


def signing_keys(document: Any) -> dict[str | None, SigningKey]:
    """The usable signature keys of a JWKS document by key id; others (encryption keys,
    key types this build cannot use) are skipped."""
    if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWKS is a JSON object with a 'keys' list")
    keys: dict[str | None, SigningKey] = {}
    for entry in document["keys"]:
        if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
            continue
        try:
            jwk = jwt.PyJWK(entry)
        except jwt.PyJWTError:
            continue
        alg = entry.get("alg")
        keys[jwk.key_id] = SigningKey(jwk, alg if isinstance(alg, str) else None)
    if not keys:
        raise ValueError("the JWKS holds no usable signature key")
    return keys


class JwksKeys:
    """The provider's signing keys by key id, read again when stale, and at most once per
    cooldown for a key id not seen yet (a rotation, or a forged id)."""

    def __init__(
        self,
        load: KeyLoader,
        source: str,
        cache_seconds: float,
        cooldown_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._load = load
        self._source = source
        self._cache_seconds = cache_seconds
        self._cooldown_seconds = cooldown_seconds
        self._clock = clock
        self._keys: dict[str | None, SigningKey] = {}
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()

    async def key(self, kid: str | None) -> SigningKey:
        now = self._clock()
        if self._fetched_at is None or now - self._fetched_at >= self._cache_seconds:
            await self._refresh(self._fetched_at)
        found = self._lookup(kid)
        if found is None and self._clock() - (self._fetched_at or 0) >= self._cooldown_seconds:
            await self._refresh(self._fetched_at)
            found = self._lookup(kid)
        if found is None:
            raise CredentialsRefused(
                f"the JWT's signing key {kid!r} is not in the provider's JWKS",
                "unknown_key",
            )
        return found

    def _lookup(self, kid: str | None) -> SigningKey | None:
        if kid is None and len(self._keys) == 1:
            return next(iter(self._keys.values()))
        return self._keys.get(kid)

    async def _refresh(self, seen: float | None) -> None:
        async with self._lock:
            if self._fetched_at != seen:
                return  # another call refreshed while this one waited
            try:
                keys = signing_keys(await asyncio.to_thread(self._load))
            except (OSError, ValueError, jwt.PyJWTError) as exc:
                log.warning(
                    "cannot read the JWKS", extra={"source": self._source, "error": str(exc)}
                )
                if not self._keys:
                    raise Unavailable(
                        f"cannot read the JWT signing keys from {self._source}; retry"
                    ) from exc
                self._fetched_at = self._clock()  # keep the old keys until the next try
                return
            self._keys = keys
            self._fetched_at = self._clock()
            log.info("JWKS read", extra={"source": self._source, "keys": len(self._keys)})


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The claim at a dotted path (realm_access.roles), None when absent."""
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def claim_values(value: Any) -> list[str]:
    """A claim as a list of strings: a list, or one space-separated string (OAuth scopes)."""
    if isinstance(value, str):
        return value.split()
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def grants_of(values: list[str], table: Mapping[str, list[str]]) -> tuple[Grant, ...]:
    """Grants of claim values: a table entry, `role`, or `role:pattern`; others are ignored
    (providers add roles of their own, such as offline_access)."""
    grants: list[Grant] = []
    for value in values:
        texts = table.get(value, [value])
        for text in texts:
            try:
                grant = Grant.parse(text)
            except ValueError:
                continue
            if grant not in grants:
                grants.append(grant)
    return tuple(grants)


@dataclass(frozen=True)
class _Verified:
    principal: Principal
    valid_until: float


_REFUSALS: tuple[tuple[type[jwt.PyJWTError], str, str], ...] = (
    (jwt.ExpiredSignatureError, "expired", "the JWT has expired; get a new token"),
    (jwt.ImmatureSignatureError, "not_yet_valid", "the JWT is not valid yet (nbf or iat)"),
    (jwt.InvalidAudienceError, "wrong_audience", "the JWT's audience is not {audience!r}"),
    (jwt.InvalidIssuerError, "wrong_issuer", "the JWT's issuer is not {issuer!r}"),
    (jwt.MissingRequiredClaimError, "missing_claim", "the JWT lacks a required claim: {exc}"),
    (jwt.InvalidSignatureError, "bad_signature", "the JWT's signature does not verify"),
)


class JwtVerifier:
    """Turns a bearer JWT into a principal, or refuses it with a precise reason."""

    def __init__(
        self,
        settings: JwtSettings,
        keys: JwksKeys,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._keys = keys
        self._now = wall_clock
        # Keyed by the token itself: hashing a JWT on every call would cost more than the
        # lookup; the tokens stay in this process's memory only, like the static ones.
        self._verified: dict[str, _Verified] = {}

    def remembered(self, token: str) -> Principal | None:
        """The principal of a token verified before and not expired since."""
        cached = self._verified.get(token)
        if cached is None:
            return None
        if self._now() < cached.valid_until:
            return cached.principal
        del self._verified[token]
        return None

    async def principal(self, token: str) -> Principal:
        remembered = self.remembered(token)
        if remembered is not None:
            return remembered
        claims = await self._verify(token)
        principal = self._principal_of(claims)
        self._remember(token, _Verified(principal, float(claims["exp"]) + self._leeway))
        return principal

    @property
    def _leeway(self) -> float:
        return self._settings.leeway_seconds

    async def _verify(self, token: str) -> dict[str, Any]:
        settings = self._settings
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise CredentialsRefused("the bearer token is not a valid JWT", "malformed") from exc
        algorithm = header.get("alg")
        if algorithm not in settings.algorithms:
            raise CredentialsRefused(
                f"the JWT is signed with {algorithm!r}; accepted: {settings.algorithms}",
                "algorithm",
            )
        kid = header.get("kid")
        key = await self._keys.key(kid if isinstance(kid, str) else None)
        if not key.signs_with(str(algorithm)):
            raise CredentialsRefused(
                f"the JWT's algorithm {algorithm!r} does not match its key {kid!r}", "algorithm"
            )
        try:
            return jwt.decode(
                token,
                key=key.jwk.key,
                algorithms=[str(algorithm)],
                audience=settings.audience,
                issuer=settings.issuer,
                leeway=settings.leeway_seconds,
                options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.PyJWTError as exc:
            for error_type, reason, message in _REFUSALS:
                if isinstance(exc, error_type):
                    text = message.format(
                        audience=settings.audience, issuer=settings.issuer, exc=exc
                    )
                    raise CredentialsRefused(text, reason) from exc
            raise CredentialsRefused(f"the JWT is not valid: {exc}", "invalid") from exc

    def _principal_of(self, claims: Mapping[str, Any]) -> Principal:
        settings = self._settings
        values = claim_values(claim_at(claims, settings.roles_claim))
        subject = claim_at(claims, settings.subject_claim)
        return Principal(
            subject=f"jwt:{subject}" if isinstance(subject, str) and subject else "jwt:unknown",
            grants=grants_of(values, settings.grants_by_claim_value),
        )

    def _remember(self, token: str, verified: _Verified) -> None:
        limit = self._settings.verified_cache_size
        if limit == 0:
            return
        if len(self._verified) >= limit:
            del self._verified[next(iter(self._verified))]  # the oldest entry
        self._verified[token] = verified


def verifier_of(settings: JwtSettings) -> JwtVerifier:
    if settings.jwks_url:
        load, source = (
            url_loader(settings.jwks_url, settings.jwks_timeout_seconds),
            settings.jwks_url,
        )
    else:
        load, source = file_loader(settings.jwks_file), settings.jwks_file
    keys = JwksKeys(
        load, source, settings.jwks_cache_seconds, settings.jwks_refresh_cooldown_seconds
    )
    return JwtVerifier(settings, keys)
