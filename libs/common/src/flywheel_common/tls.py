"""TLS of the gRPC servers (and of a service's HTTPS port): credentials from settings,
certificates re-read when their files change, and a refusal to serve plaintext unless
plaintext was chosen."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from collections.abc import Callable
from pathlib import Path
from typing import cast

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from flywheel_common.settings import ServerTlsSettings

log = logging.getLogger(__name__)


class TlsNotConfigured(Exception):
    """TLS is on (the default) but the certificate or key is missing or unreadable."""


def key_matches_certificate(key_pem: bytes, cert_pem: bytes) -> bool:
    """Whether the private key belongs to the first certificate of the chain."""
    certificate = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    encoding = serialization.Encoding.DER
    return bool(
        key.public_key().public_bytes(encoding, public)
        == certificate.public_key().public_bytes(encoding, public)
    )


def _fingerprint(paths: tuple[Path, ...]) -> tuple[tuple[int, int, int], ...]:
    """What changes when a file is rewritten or replaced: inode, size, mtime."""
    stats = (path.stat() for path in paths)
    return tuple((stat.st_ino, stat.st_size, stat.st_mtime_ns) for stat in stats)


class ReloadingCertificates:
    """The server's certificate configuration, re-read from its files when they change.

    gRPC asks `fetch` before every TLS handshake; it stats the files (cheap) and reads them
    again only when one changed, so a renewed certificate is served to the next connection
    with no restart. A half-written or broken set is refused (logged) and the last good one
    stays in use; connections already open keep the certificate they started with.
    """

    def __init__(self, tls: ServerTlsSettings) -> None:
        if tls.cert_file is None or tls.key_file is None:
            raise TlsNotConfigured("grpc.tls needs cert_file and key_file")
        self._cert_file, self._key_file = tls.cert_file, tls.key_file
        self._client_ca_file = tls.client_ca_file
        self._paths: tuple[Path, ...] = (tls.cert_file, tls.key_file) + (
            (tls.client_ca_file,) if tls.client_ca_file is not None else ()
        )
        self._lock = threading.Lock()
        try:
            self._seen = _fingerprint(self._paths)
            self.initial = self._load()
        except (OSError, ValueError, TypeError) as exc:
            raise TlsNotConfigured(f"cannot load the TLS files: {exc}") from exc

    def _load(self) -> grpc.ServerCertificateConfiguration:
        key = self._key_file.read_bytes()
        chain = self._cert_file.read_bytes()
        # A certificate replaced before its key would fail every handshake: wait for both.
        if not key_matches_certificate(key, chain):
            raise ValueError(f"{self._key_file} is not the key of {self._cert_file}")
        client_ca = self._client_ca_file.read_bytes() if self._client_ca_file else None
        return grpc.ssl_server_certificate_configuration([(key, chain)], client_ca)

    def fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """The new configuration when the files changed since the last look, else None
        (gRPC keeps the current one). Runs on gRPC's threads: never raises."""
        with self._lock:
            try:
                current = _fingerprint(self._paths)
                if current == self._seen:
                    return None
                self._seen = current
                configuration = self._load()
            except (OSError, ValueError, TypeError) as exc:
                log.error(
                    "TLS files changed but cannot be loaded; serving the previous ones",
                    extra={"error": str(exc)},
                )
                return None
        log.info("TLS certificate reloaded", extra={"cert_file": str(self._cert_file)})
        return configuration


def server_credentials(tls: ServerTlsSettings, env_prefix: str) -> grpc.ServerCredentials | None:
    """Credentials for the gRPC port; None when plaintext was chosen explicitly.

    Raises TlsNotConfigured, naming the variables to set, when TLS is on without files.
    """
    if not tls.enabled:
        log.warning(
            "gRPC serves PLAINTEXT (grpc.tls.enabled=false): only behind a mesh or sidecar "
            "that encrypts"
        )
        return None
    if tls.cert_file is None or tls.key_file is None:
        raise TlsNotConfigured(
            "gRPC needs TLS and has no certificate: set "
            f"{env_prefix}GRPC__TLS__CERT_FILE and {env_prefix}GRPC__TLS__KEY_FILE "
            f"(PEM files; `flywheel certs init` makes a local set), or set "
            f"{env_prefix}GRPC__TLS__ENABLED=false to serve plaintext, only behind a mesh or "
            "sidecar that encrypts the traffic"
        )
    certificates = ReloadingCertificates(tls)
    # grpc documents None from the fetcher as "keep the current configuration"; its type
    # stubs leave that out.
    fetch = cast(Callable[[], grpc.ServerCertificateConfiguration], certificates.fetch)
    return grpc.dynamic_ssl_server_credentials(
        certificates.initial,
        fetch,
        require_client_authentication=tls.require_client_cert,
    )


class ReloadingSslContext:
    """The same certificate files as an `ssl` server context (for a service's HTTPS port
    beside its gRPC one), re-read when they change as `ReloadingCertificates` does: every
    handshake looks at the files first and, when they changed and still match, switches the
    connection to a context made from them; a broken set keeps the last good one."""

    def __init__(self, tls: ServerTlsSettings) -> None:
        if tls.cert_file is None or tls.key_file is None:
            raise TlsNotConfigured("grpc.tls needs cert_file and key_file")
        self._tls = tls
        self._cert_file, self._key_file = tls.cert_file, tls.key_file
        self._paths: tuple[Path, ...] = (tls.cert_file, tls.key_file) + (
            (tls.client_ca_file,) if tls.client_ca_file is not None else ()
        )
        self._lock = threading.Lock()
        try:
            self._seen = _fingerprint(self._paths)
            self._current = self._load()
            self.context = self._load()
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise TlsNotConfigured(f"cannot load the TLS files: {exc}") from exc
        self.context.sni_callback = self._handshake
        """What the server listens with; each handshake moves to the newest good files."""

    def _load(self) -> ssl.SSLContext:
        tls, cert_file, key_file = self._tls, self._cert_file, self._key_file
        if not key_matches_certificate(key_file.read_bytes(), cert_file.read_bytes()):
            raise ValueError(f"{key_file} is not the key of {cert_file}")
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        if tls.client_ca_file is not None:
            context.load_verify_locations(tls.client_ca_file)
            context.verify_mode = (
                ssl.CERT_REQUIRED if tls.require_client_cert else ssl.CERT_OPTIONAL
            )
        return context

    def _handshake(
        self, connection: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        with self._lock:
            try:
                current = _fingerprint(self._paths)
                if current != self._seen:
                    self._seen = current
                    self._current = self._load()
                    log.info(
                        "TLS certificate reloaded", extra={"cert_file": str(self._tls.cert_file)}
                    )
            except (OSError, ValueError, TypeError, ssl.SSLError) as exc:
                log.error(
                    "TLS files changed but cannot be loaded; serving the previous ones",
                    extra={"error": str(exc)},
                )
            connection.context = self._current


def https_context(tls: ServerTlsSettings, env_prefix: str, what: str) -> ssl.SSLContext | None:
    """The server context of a service's HTTPS port beside its gRPC one (`what` it serves,
    for the messages): the gRPC port's certificate, re-read when it changes; None, plain
    HTTP with a warning, when gRPC's TLS is off."""
    if not tls.enabled:
        log.warning(f"{what} served over plain HTTP (grpc.tls.enabled=false)")
        return None
    if tls.cert_file is None or tls.key_file is None:
        raise TlsNotConfigured(
            f"{what} needs the gRPC port's certificate: set "
            f"{env_prefix}GRPC__TLS__CERT_FILE and {env_prefix}GRPC__TLS__KEY_FILE"
        )
    return ReloadingSslContext(tls).context


def served_url(host: str, port: int, tls: ServerTlsSettings) -> str:
    """Where a service's HTTP port answers: its scheme, and this machine's name when it
    binds every address."""
    name = socket.gethostname() if host in ("0.0.0.0", "::", "") else host
    return f"{'https' if tls.enabled else 'http'}://{name}:{port}"
