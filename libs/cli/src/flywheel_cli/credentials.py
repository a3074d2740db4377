"""The credentials of a local platform (`make run`): a CA, the services' certificate, a
client certificate and bearer tokens, made once under .run/ and reused."""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from flywheel_common.certificates import LOCAL_HOSTS, CertificateAuthority
from flywheel_common.settings import Role

ROLES = (Role.ADMIN, Role.WRITER, Role.READER)


@dataclass(frozen=True)
class LocalCredentials:
    """Files under `root` (by default .run/): tls/ca.pem and ca-key.pem (the local CA),
    tls/server.pem and server-key.pem (every service, for localhost and 127.0.0.1),
    tls/client.pem and client-key.pem (mutual TLS), tokens.json ({"token": "role"}, the
    format of FLYWHEEL_<SERVICE>_AUTH__TOKENS and of AUTH__TOKENS_FILE), tokens/<role> (one
    token each, for REGISTRY_TOKEN_FILE) and cli.env (what the CLI and the demo read)."""

    root: Path

    @property
    def tls(self) -> Path:
        return self.root / "tls"

    @property
    def ca_file(self) -> Path:
        return self.tls / "ca.pem"

    @property
    def tokens_file(self) -> Path:
        return self.root / "tokens.json"

    @property
    def cli_env_file(self) -> Path:
        return self.root / "cli.env"

    def token_file(self, role: Role) -> Path:
        return self.root / "tokens" / role.value

    def tokens(self) -> dict[str, Role]:
        return {
            token: Role(role) for token, role in json.loads(self.tokens_file.read_text()).items()
        }

    def token(self, role: Role) -> str:
        """The token of a role."""
        return next(token for token, has in self.tokens().items() if has is role)

    def ensure(self, hosts: Sequence[str] = LOCAL_HOSTS, tokens: bool = True) -> list[Path]:
        """Make whatever is missing (a CA first, so certificates always match it): the
        server certificate for `hosts`, and unless `tokens` is False the tokens and cli.env;
        returns the files written. Existing files are kept: delete them to rotate."""
        written: list[Path] = []
        ca_key = self.tls / "ca-key.pem"
        if self.ca_file.exists() and ca_key.exists():
            ca = CertificateAuthority.load(self.ca_file, ca_key)
        else:
            ca = CertificateAuthority.create("Flywheel local CA")
            ca.key_pair.write(self.ca_file, ca_key)
            written.append(self.ca_file)
            for stale in ("server.pem", "client.pem"):  # signed by a CA that is gone
                (self.tls / stale).unlink(missing_ok=True)
        server, client = self.tls / "server.pem", self.tls / "client.pem"
        if not server.exists():
            ca.issue_server(hosts).write(server, self.tls / "server-key.pem")
            written.append(server)
        if not client.exists():
            ca.issue_client("flywheel-local-client").write(client, self.tls / "client-key.pem")
            written.append(client)
        if not tokens:
            return written
        if not self.tokens_file.exists():
            made = {secrets.token_urlsafe(32): role.value for role in ROLES}
            _write_private(self.tokens_file, json.dumps(made, indent=2) + "\n")
            written.append(self.tokens_file)
        for role in ROLES:
            if not self.token_file(role).exists():
                _write_private(self.token_file(role), self.token(role) + "\n")
                written.append(self.token_file(role))
        if not self.cli_env_file.exists() or self.ca_file in written:
            _write_private(self.cli_env_file, self._cli_env())
            written.append(self.cli_env_file)
        return written

    def _cli_env(self) -> str:
        lines = {
            "FLYWHEEL_CLI_TOKEN": self.token(Role.ADMIN),
            "FLYWHEEL_CLI_TLS__CA_FILE": self.ca_file.resolve(),
            "FLYWHEEL_CLI_TLS__CERT_FILE": (self.tls / "client.pem").resolve(),
            "FLYWHEEL_CLI_TLS__KEY_FILE": (self.tls / "client-key.pem").resolve(),
        }
        header = (
            "# Written by `flywheel certs init` (make run): the CLI's CA, certificate, token.\n"
        )
        return header + "".join(f"{key}={value}\n" for key, value in lines.items())


def _write_private(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_text(text)
