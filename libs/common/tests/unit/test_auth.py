"""Grants, principals, static tokens and JWTs: the pure logic of who may do what."""

import asyncio
import json
import os
import time
from pathlib import Path

import jwt
import pytest
from pydantic import ValidationError

from flywheel_common.auth import (
    ANONYMOUS_ADMIN,
    SYSTEM,
    AccessRefused,
    CredentialsRefused,
    Grant,
    Principal,
    acting_as,
    current_principal,
    require_role,
    visible,
)
from flywheel_common.grpc_server import ServiceBinding, Unscoped, model_field
from flywheel_common.identities import Authenticator, NoIdentitiesConfigured
from flywheel_common.jwt_tokens import (
    JwksKeys,
    JwtVerifier,
    SigningKey,
    claim_at,
    claim_values,
    grants_of,
)
from flywheel_common.settings import AuthSettings, JwtSettings, Role, StaticToken, WithRegistry
from flywheel_testing.identity import AUDIENCE, ISSUER, IdentityProvider
from inference import grpc_service_pb2

SERVICE = grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"].full_name


def test_roles_include_the_ones_before_them() -> None:
    assert Role.ADMIN.allows(Role.WRITER)
    assert Role.WRITER.allows(Role.READER)
    assert Role.READER.allows(Role.READER)
    assert not Role.READER.allows(Role.WRITER)
    assert not Role.WRITER.allows(Role.ADMIN)


@pytest.mark.parametrize(
    ("pattern", "model", "covered"),
    [
        ("fraud-detector", "fraud-detector", True),
        ("fraud-detector", "fraud-detector-2", False),
        ("fraud-*", "fraud-detector", True),
        ("fraud-*", "fraud-", True),
        ("fraud-*", "credit-score", False),
        ("*", "anything", True),
    ],
)
def test_a_grant_covers_its_exact_name_prefix_or_everything(
    pattern: str, model: str, covered: bool
) -> None:
    assert Grant(Role.READER, pattern).covers(model) is covered


def test_grants_parse_from_role_or_role_and_pattern() -> None:
    assert Grant.parse("writer:fraud-*") == Grant(Role.WRITER, "fraud-*")
    assert Grant.parse("admin") == Grant(Role.ADMIN, "*")
    with pytest.raises(ValueError, match="prefix ending in"):
        Grant.parse("reader:fr*ud")
    with pytest.raises(ValueError, match="must be a model name"):
        Grant.parse("writer:")
    with pytest.raises(ValueError, match="owner"):
        Grant.parse("owner:fraud-*")


def test_a_principal_holds_the_highest_role_its_grants_give_on_a_model() -> None:
    team = Principal("team", (Grant(Role.READER), Grant(Role.WRITER, "fraud-*")))
    assert team.role_on("fraud-a") is Role.WRITER
    assert team.role_on("credit") is Role.READER
    assert team.allows(Role.WRITER, "fraud-a")
    assert not team.allows(Role.WRITER, "credit")
    assert team.allows_some_model(Role.WRITER)
    assert not team.allows_every_model(Role.WRITER)
    assert team.allows_every_model(Role.READER)
    assert Principal("none", ()).role_on("fraud-a") is None


def test_require_role_checks_the_current_caller_on_the_model() -> None:
    scoped = Principal.with_role("fraud-ci", Role.WRITER, ["fraud-*"])
    with acting_as(scoped):
        assert current_principal() == scoped
        assert require_role(Role.WRITER, "fraud-a") == scoped
        refused = "needs role writer on model 'credit'; fraud-ci holds writer:fraud-"
        with pytest.raises(AccessRefused, match=refused):
            require_role(Role.WRITER, "credit")
        with pytest.raises(AccessRefused, match="on every model"):
            require_role(Role.READER)
        assert visible(["fraud-a", "credit", "fraud-b"], lambda m: m) == ["fraud-a", "fraud-b"]
    assert current_principal() == SYSTEM  # the caller does not outlive its block


def authenticate(authenticator: Authenticator, header: str | None) -> Principal:
    return asyncio.run(authenticator.authenticate(header))


def test_without_identities_a_service_refuses_to_start_naming_the_variables() -> None:
    with pytest.raises(NoIdentitiesConfigured) as refused:
        Authenticator(AuthSettings(), "FLYWHEEL_REGISTRY_")
    message = str(refused.value)
    for variable in ("AUTH__TOKENS", "AUTH__JWT__JWKS_URL", "AUTH__ALLOW_ANONYMOUS"):
        assert f"FLYWHEEL_REGISTRY_{variable}" in message


def test_anonymous_access_is_an_explicit_choice_that_excludes_identities() -> None:
    anonymous = Authenticator(AuthSettings(allow_anonymous=True))
    assert authenticate(anonymous, None) is ANONYMOUS_ADMIN
    with pytest.raises(ValidationError, match="cannot be combined"):
        AuthSettings(allow_anonymous=True, tokens={"t": Role.ADMIN})


def test_static_tokens_resolve_to_their_role_and_models() -> None:
    authenticator = Authenticator(
        AuthSettings(
            tokens={
                "r-token": Role.READER,
                "fraud-token": StaticToken(role=Role.WRITER, models=["fraud-*"], subject="fraud"),
            }
        )
    )
    assert authenticate(authenticator, "Bearer r-token").grants == (Grant(Role.READER),)
    fraud = authenticate(authenticator, "bearer fraud-token")
    assert fraud == Principal("fraud", (Grant(Role.WRITER, "fraud-*"),))


def test_static_tokens_with_grants_read_from_json() -> None:
    settings = AuthSettings.model_validate_json(
        '{"tokens": {"a": "admin", "b": {"role": "writer", "models": ["fraud-*", "iris"]}}}'
    )
    assert settings.tokens["a"] is Role.ADMIN
    assert settings.tokens["b"] == StaticToken(role=Role.WRITER, models=["fraud-*", "iris"])
    with pytest.raises(ValidationError, match="prefix ending in"):
        AuthSettings.model_validate_json('{"tokens": {"b": {"role": "writer", "models": ["*x"]}}}')


def test_tokens_from_a_mounted_file_join_those_of_the_environment(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    tokens_file.write_text(json.dumps({"f": "reader", "g": {"role": "writer", "models": ["x-*"]}}))
    settings = AuthSettings(tokens_file=str(tokens_file), tokens={"e": Role.ADMIN})
    assert settings.all_tokens() == {
        "f": Role.READER,
        "g": StaticToken(role=Role.WRITER, models=["x-*"]),
        "e": Role.ADMIN,
    }
    authenticator = Authenticator(settings)
    assert authenticate(authenticator, "Bearer g").grants == (Grant(Role.WRITER, "x-*"),)
    assert authenticate(authenticator, "Bearer e").grants == (Grant(Role.ADMIN),)


def test_tokens_rotate_by_editing_the_file_with_no_restart(tmp_path: Path) -> None:
    tokens_file = tmp_path / "tokens.json"
    tokens_file.write_text(json.dumps({"old": "writer"}))
    now = [0.0]
    authenticator = Authenticator(AuthSettings(tokens_file=str(tokens_file)), clock=lambda: now[0])
    assert authenticate(authenticator, "Bearer old").grants == (Grant(Role.WRITER),)

    def rewrite(text: str, at: int) -> None:
        tokens_file.write_text(text)
        os.utime(tokens_file, ns=(at, at))  # a new modification time, however fast the disk

    rewrite(json.dumps({"old": "writer", "new": "writer"}), 10**18)
    assert authenticate(authenticator, "Bearer old").grants == (Grant(Role.WRITER),)
    with pytest.raises(CredentialsRefused):  # looked at no more than once a second
        authenticate(authenticator, "Bearer new")
    now[0] += 1.5
    assert authenticate(authenticator, "Bearer new").grants == (Grant(Role.WRITER),)

    rewrite(json.dumps({"new": "writer"}), 2 * 10**18)  # the old token revoked
    now[0] += 1.5
    with pytest.raises(CredentialsRefused):
        authenticate(authenticator, "Bearer old")

    rewrite("{ half written", 3 * 10**18)  # a broken file keeps the tokens it replaced
    now[0] += 1.5
    assert authenticate(authenticator, "Bearer new").grants == (Grant(Role.WRITER),)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot be read: No such file or directory"),
        ("not json", "must be a JSON object of tokens"),
        ('["a"]', "must be a JSON object of tokens"),
        ('{"top-secret-token": "root"}', "entry 1 is neither a role"),
    ],
)
def test_a_bad_tokens_file_stops_the_service_without_echoing_a_token(
    tmp_path: Path, content: str | None, fragment: str
) -> None:
    tokens_file = tmp_path / "tokens.json"
    if content is not None:
        tokens_file.write_text(content)
    with pytest.raises(ValidationError, match=fragment) as refused:
        AuthSettings(tokens_file=str(tokens_file))
    assert "top-secret" not in str(refused.value)


def test_a_registry_token_is_read_from_its_file_or_the_variable_not_both(tmp_path: Path) -> None:
    secret = tmp_path / "registry-token"
    secret.write_text("s3cr3t\n")
    assert WithRegistry(registry_token_file=str(secret)).registry_token == "s3cr3t"
    with pytest.raises(ValidationError, match="not both"):
        WithRegistry(registry_token_file=str(secret), registry_token="other")
    with pytest.raises(ValidationError, match=r"registry_token_file .* cannot be read"):
        WithRegistry(registry_token_file=str(tmp_path / "missing"))


@pytest.mark.parametrize(
    ("header", "fragment", "reason"),
    [
        (None, "Bearer <token>", "missing_credentials"),
        ("Basic dXNlcjpwYXNz", "must be 'Bearer <token>'", "malformed"),
        ("Bearer ", "must be 'Bearer <token>'", "malformed"),
        ("Bearer wrong", "not valid", "invalid_token"),
    ],
)
def test_missing_or_wrong_credentials_are_unauthenticated(
    header: str | None, fragment: str, reason: str
) -> None:
    authenticator = Authenticator(AuthSettings(tokens={"good": Role.WRITER}))
    with pytest.raises(CredentialsRefused) as refused:
        authenticate(authenticator, header)
    assert fragment in refused.value.message
    assert refused.value.reason == reason


def test_subject_does_not_reveal_the_token() -> None:
    authenticator = Authenticator(AuthSettings(tokens={"very-secret-token": Role.WRITER}))
    principal = authenticate(authenticator, "Bearer very-secret-token")
    assert "secret" not in principal.subject
    assert principal.subject.startswith("writer-")


def test_claims_are_read_at_dotted_paths_as_lists_or_space_separated_strings() -> None:
    claims = {"realm_access": {"roles": ["writer:fraud-*", "offline_access"]}, "scope": "a b"}
    assert claim_at(claims, "realm_access.roles") == ["writer:fraud-*", "offline_access"]
    assert claim_at(claims, "realm_access.missing") is None
    assert claim_at(claims, "scope.deeper") is None
    assert claim_values(claim_at(claims, "scope")) == ["a", "b"]
    assert claim_values(["x", 3, "y"]) == ["x", "y"]
    assert claim_values(None) == []


def test_claim_values_map_to_grants_directly_or_through_the_table() -> None:
    table = {"team-fraud": ["writer:fraud-*", "reader"]}
    assert grants_of(["team-fraud", "admin:iris", "offline_access", "writer:*x*"], table) == (
        Grant(Role.WRITER, "fraud-*"),
        Grant(Role.READER, "*"),
        Grant(Role.ADMIN, "iris"),
    )


def test_jwt_settings_refuse_symmetric_or_unsigned_algorithms_and_need_issuer_and_audience() -> (
    None
):
    for algorithm in ("HS256", "none"):
        with pytest.raises(ValidationError, match="not accepted"):
            JwtSettings(
                jwks_file="k.json", issuer=ISSUER, audience=AUDIENCE, algorithms=[algorithm]
            )
    with pytest.raises(ValidationError, match=r"issuer and jwt\.audience"):
        JwtSettings(jwks_file="k.json")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingLoader:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.loads = 0

    def __call__(self) -> object:
        self.loads += 1
        return json.loads(self.path.read_text())


@pytest.fixture(scope="module")
def provider() -> IdentityProvider:
    return IdentityProvider()


def verifier_for(
    provider: IdentityProvider, tmp_path: Path, clock: Clock | None = None, **fields: object
) -> tuple[JwtVerifier, CountingLoader]:
    settings = JwtSettings.model_validate(
        {"jwks_file": str(tmp_path / "jwks.json"), "issuer": ISSUER, "audience": AUDIENCE} | fields
    )
    loader = CountingLoader(provider.write_jwks(tmp_path / "jwks.json"))
    keys = JwksKeys(
        loader,
        "test",
        settings.jwks_cache_seconds,
        settings.jwks_refresh_cooldown_seconds,
        clock or Clock(),
    )
    return JwtVerifier(settings, keys), loader


def verify(verifier: JwtVerifier, token: str) -> Principal:
    return asyncio.run(verifier.principal(token))


def refusal(verifier: JwtVerifier, token: str) -> CredentialsRefused:
    with pytest.raises(CredentialsRefused) as refused:
        verify(verifier, token)
    return refused.value


def test_a_valid_jwt_gives_its_subject_and_the_grants_of_its_roles_claim(
    provider: IdentityProvider, tmp_path: Path
) -> None:
    verifier, _ = verifier_for(provider, tmp_path, roles_claim="realm_access.roles")
    token = provider.token(subject="bob", extra={"realm_access": {"roles": ["writer:fraud-*"]}})
    assert verify(verifier, token) == Principal("jwt:bob", (Grant(Role.WRITER, "fraud-*"),))
    ec_token = provider.token(["reader"], kid="ec-1", algorithm="ES256")
    verifier, _ = verifier_for(provider, tmp_path)
    assert verify(verifier, ec_token).grants == (Grant(Role.READER),)


@pytest.mark.parametrize(
    ("token_fields", "reason", "fragment"),
    [
        ({"expires_in": -120}, "expired", "expired"),
        ({"not_before_in": 600}, "not_yet_valid", "not valid yet"),
        ({"audience": "someone-else"}, "wrong_audience", "audience is not 'flywheel'"),
        ({"issuer": "https://evil.test"}, "wrong_issuer", "issuer is not"),
        ({"kid": "rsa-9"}, "unknown_key", "'rsa-9' is not in the provider's JWKS"),
        ({"algorithm": "RS384"}, "algorithm", "accepted: ['RS256', 'ES256']"),
        ({"kid": "ec-1"}, "algorithm", "does not match its key"),
    ],
)
def test_bad_jwts_are_refused_with_the_reason(
    provider: IdentityProvider,
    tmp_path: Path,
    token_fields: dict[str, object],
    reason: str,
    fragment: str,
) -> None:
    verifier, _ = verifier_for(provider, tmp_path)
    refused = refusal(verifier, provider.token(**token_fields))  # type: ignore[arg-type]
    assert refused.reason == reason
    assert fragment in refused.message


def test_a_jwt_within_the_leeway_is_accepted(provider: IdentityProvider, tmp_path: Path) -> None:
    verifier, _ = verifier_for(provider, tmp_path, leeway_seconds=60)
    assert verify(verifier, provider.token(expires_in=-20)).subject == "jwt:alice"


def test_unsigned_hmac_and_tampered_tokens_are_refused(
    provider: IdentityProvider, tmp_path: Path
) -> None:
    verifier, _ = verifier_for(provider, tmp_path)
    claims = {"sub": "mallory", "iss": ISSUER, "aud": AUDIENCE, "exp": time.time() + 60}
    unsigned = jwt.encode(claims, None, algorithm="none", headers={"kid": "rsa-1"})
    assert refusal(verifier, unsigned).reason == "algorithm"
    public_pem = provider.jwks()["keys"][0]["n"]  # anything public, used as an HMAC secret
    hmac = jwt.encode(claims, public_pem, algorithm="HS256", headers={"kid": "rsa-1"})
    assert refusal(verifier, hmac).reason == "algorithm"
    header, _, signature = provider.token(["reader"]).split(".")
    forged_payload = jwt.utils.base64url_encode(
        json.dumps(claims | {"roles": ["admin"]}).encode()
    ).decode()
    assert refusal(verifier, f"{header}.{forged_payload}.{signature}").reason == "bad_signature"
    assert refusal(verifier, "not.a.jwt").reason == "malformed"


class CountingKeys(JwksKeys):
    def __init__(self, loader: CountingLoader) -> None:
        super().__init__(loader, "test", 300, 30, Clock())
        self.lookups = 0

    async def key(self, kid: str | None) -> SigningKey:
        self.lookups += 1
        return await super().key(kid)


def test_a_verified_token_is_remembered_until_it_expires(
    provider: IdentityProvider, tmp_path: Path
) -> None:
    wall = Clock()
    wall.now = time.time()
    settings = JwtSettings(jwks_file="jwks.json", issuer=ISSUER, audience=AUDIENCE)
    keys = CountingKeys(CountingLoader(provider.write_jwks(tmp_path / "jwks.json")))
    verifier = JwtVerifier(settings, keys, wall_clock=wall)
    token = provider.token(["reader"], expires_in=60)
    first = verify(verifier, token)
    assert verify(verifier, token) is first
    assert keys.lookups == 1  # the second call paid no signature check
    wall.now += 60 + settings.leeway_seconds + 1  # past exp and the leeway
    verify(verifier, token)
    assert keys.lookups == 2  # checked again (PyJWT's own clock still finds it valid)


def test_an_unknown_key_id_reads_the_jwks_again_at_most_once_per_cooldown(
    provider: IdentityProvider, tmp_path: Path
) -> None:
    clock = Clock()
    verifier, loader = verifier_for(provider, tmp_path, clock, jwks_refresh_cooldown_seconds=30)
    verify(verifier, provider.token())
    assert loader.loads == 1
    clock.now += 31
    for _ in range(5):
        assert refusal(verifier, provider.token(kid="forged")).reason == "unknown_key"
    assert loader.loads == 2  # one refresh, then the cooldown holds
    rotated = IdentityProvider(generation=2)
    rotated.write_jwks(tmp_path / "jwks.json")
    clock.now += 31
    assert verify(verifier, rotated.token(subject="carol")).subject == "jwt:carol"
    assert loader.loads == 3


def test_a_binding_must_say_how_each_method_names_its_model() -> None:
    scopes = {"ServerLive": Unscoped.SERVER, "ModelInfer": model_field("model_name")}
    binding = ServiceBinding(SERVICE, print, None, scopes=scopes)
    with pytest.raises(ValueError, match="ModelMetadata, ModelReady, ServerMetadata, ServerReady"):
        binding.check_scopes()
    assert binding.model_of("ModelInfer") is not None
    assert binding.model_of("ServerLive") is None
