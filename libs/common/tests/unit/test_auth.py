import pytest

from flywheel_common.auth import (
    ANONYMOUS_ADMIN,
    SYSTEM,
    TokenAuthenticator,
    acting_as,
    current_principal,
    require_role,
)
from flywheel_common.errors import PermissionDenied, Unauthenticated
from flywheel_common.settings import Role


def test_roles_include_the_ones_before_them() -> None:
    assert Role.ADMIN.allows(Role.WRITER)
    assert Role.WRITER.allows(Role.READER)
    assert Role.READER.allows(Role.READER)
    assert not Role.READER.allows(Role.WRITER)
    assert not Role.WRITER.allows(Role.ADMIN)


def test_without_tokens_everyone_is_an_anonymous_admin() -> None:
    authenticator = TokenAuthenticator({})
    assert not authenticator.enabled
    assert authenticator.authenticate(None) is ANONYMOUS_ADMIN


def test_bearer_token_resolves_to_its_role() -> None:
    authenticator = TokenAuthenticator({"r-token": Role.READER, "a-token": Role.ADMIN})
    assert authenticator.authenticate("Bearer r-token").role is Role.READER
    assert authenticator.authenticate("bearer a-token").role is Role.ADMIN


@pytest.mark.parametrize(
    ("header", "fragment"),
    [
        (None, "Bearer <token>"),
        ("Basic dXNlcjpwYXNz", "must be 'Bearer <token>'"),
        ("Bearer ", "must be 'Bearer <token>'"),
        ("Bearer wrong", "not valid"),
    ],
)
def test_missing_or_wrong_credentials_are_unauthenticated(
    header: str | None, fragment: str
) -> None:
    authenticator = TokenAuthenticator({"good": Role.WRITER})
    with pytest.raises(Unauthenticated, match=fragment.replace("<", ".").replace(">", ".")):
        authenticator.authenticate(header)


def test_subject_does_not_reveal_the_token() -> None:
    principal = TokenAuthenticator({"very-secret-token": Role.WRITER}).authenticate(
        "Bearer very-secret-token"
    )
    assert "secret" not in principal.subject
    assert principal.subject.startswith("writer-")


def test_require_role_checks_the_current_principal() -> None:
    reader = TokenAuthenticator({"t": Role.READER}).authenticate("Bearer t")
    with acting_as(reader):
        assert current_principal() == reader
        assert require_role(Role.READER) == reader
        with pytest.raises(PermissionDenied, match="needs role admin"):
            require_role(Role.ADMIN)
    assert current_principal() == SYSTEM  # the caller does not outlive its block
