"""The tests' certificates: one CA per test process, a server certificate for loopback and a
client certificate, and the settings and channels that use them."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from flywheel_common.certificates import CertificateAuthority
from flywheel_common.channels import ChannelOption, aio_channel
from flywheel_common.settings import ClientTlsSettings, GrpcSettings, ServerTlsSettings


@dataclass(frozen=True)
class Pki:
    """Files of the tests' CA (ca.pem), server (server.pem, server-key.pem) and client
    (client.pem, client-key.pem) certificates."""

    directory: Path
    ca: CertificateAuthority

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.pem"

    def server_tls(self, require_client_cert: bool = False) -> ServerTlsSettings:
        return ServerTlsSettings(
            cert_file=self.directory / "server.pem",
            key_file=self.directory / "server-key.pem",
            client_ca_file=self.ca_file,
            require_client_cert=require_client_cert,
        )

    def client_tls(self) -> ClientTlsSettings:
        """Trusts the CA and presents the client certificate (servers that do not ask for
        one ignore it)."""
        return ClientTlsSettings(
            ca_file=self.ca_file,
            cert_file=self.directory / "client.pem",
            key_file=self.directory / "client-key.pem",
        )


@functools.cache
def pki() -> Pki:
    """Made once per test process, in a folder removed when the process exits."""
    directory = Path(tempfile.mkdtemp(prefix="flywheel-tls-"))
    atexit.register(shutil.rmtree, directory, ignore_errors=True)
    ca = CertificateAuthority.create("Flywheel test CA")
    (directory / "ca.pem").write_bytes(ca.cert_pem)
    ca.issue_server().write(directory / "server.pem", directory / "server-key.pem")
    ca.issue_client("flywheel-tests").write(directory / "client.pem", directory / "client-key.pem")
    return Pki(directory, ca)


def grpc_settings(**fields: Any) -> GrpcSettings:
    """A service's gRPC settings for tests: TLS with the tests' certificates, `fields` on top."""
    return GrpcSettings(**{"tls": pki().server_tls(), **fields})


def client_tls_for(server: ServerTlsSettings) -> ClientTlsSettings:
    """How a test calls a server with these settings: plaintext when it serves plaintext."""
    return pki().client_tls() if server.enabled else ClientTlsSettings(enabled=False)


def secure_channel(address: str, options: Sequence[ChannelOption] = ()) -> grpc.aio.Channel:
    """A channel to a service the tests started, over TLS with the tests' client certificate.
    A list of replicas (`ipv4:host:port,host:port`) names no one host to check the
    certificate against: the certificate's `localhost` is named instead."""
    tls = pki().client_tls()
    if address.startswith("ipv4:"):
        tls = tls.model_copy(update={"server_name": "localhost"})
    return aio_channel(address, tls, options)


def tls_environment(prefix: str) -> dict[str, str]:
    """The variables that give a service process (env prefix `prefix`) the tests' server
    certificate and, for its calls to the registry, the tests' CA and client certificate."""
    server, client = pki().server_tls(), pki().client_tls()
    return {
        f"{prefix}GRPC__TLS__CERT_FILE": str(server.cert_file),
        f"{prefix}GRPC__TLS__KEY_FILE": str(server.key_file),
        f"{prefix}GRPC__TLS__CLIENT_CA_FILE": str(server.client_ca_file),
        f"{prefix}REGISTRY_TLS__CA_FILE": str(client.ca_file),
        f"{prefix}REGISTRY_TLS__CERT_FILE": str(client.cert_file),
        f"{prefix}REGISTRY_TLS__KEY_FILE": str(client.key_file),
    }


def cli_tls_environment() -> dict[str, str]:
    """The FLYWHEEL_CLI_TLS__* variables that make the `flywheel` command (or an example
    script) trust the tests' CA and present their client certificate."""
    client = pki().client_tls()
    return {
        "FLYWHEEL_CLI_TLS__CA_FILE": str(client.ca_file),
        "FLYWHEEL_CLI_TLS__CERT_FILE": str(client.cert_file),
        "FLYWHEEL_CLI_TLS__KEY_FILE": str(client.key_file),
    }
