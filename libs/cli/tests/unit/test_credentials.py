"""`make run`'s credentials under .run/: made once, reused, private, rotated by deleting."""

from __future__ import annotations

import stat
from pathlib import Path

from flywheel_cli.credentials import LocalCredentials

from flywheel_common.settings import Role
from flywheel_common.tls import key_matches_certificate


def test_credentials_are_made_once_and_reused(tmp_path: Path) -> None:
    credentials = LocalCredentials(tmp_path / ".run")
    written = credentials.ensure()
    assert credentials.ca_file in written
    tokens = credentials.tokens()
    assert sorted(tokens.values()) == sorted(Role)
    tls = credentials.tls
    assert key_matches_certificate(
        (tls / "server-key.pem").read_bytes(), (tls / "server.pem").read_bytes()
    )
    for private in ("ca-key.pem", "server-key.pem", "client-key.pem"):
        assert stat.S_IMODE((tls / private).stat().st_mode) == 0o600, private
    role_files = [credentials.token_file(role) for role in Role]
    for private in (credentials.tokens_file, credentials.cli_env_file, *role_files):
        assert stat.S_IMODE(private.stat().st_mode) == 0o600, private
    for role in Role:  # one token per file, for REGISTRY_TOKEN_FILE
        assert credentials.token_file(role).read_text().strip() == credentials.token(role)

    ca = credentials.ca_file.read_bytes()
    assert credentials.ensure() == []
    assert credentials.ca_file.read_bytes() == ca
    assert credentials.tokens() == tokens

    # Rotation: delete the CA and the certificates signed by it are made again.
    credentials.ca_file.unlink()
    remade = credentials.ensure()
    assert {credentials.ca_file, tls / "server.pem", tls / "client.pem"} <= set(remade)
    assert credentials.tokens() == tokens
