"""TLS of the gRPC servers over real loopback: who is refused, mutual TLS, and certificates
that change on disk while the server runs."""

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health_pb2, health_pb2_grpc

from flywheel_common.certificates import CertificateAuthority
from flywheel_common.channels import aio_channel
from flywheel_common.grpc_server import GrpcServer
from flywheel_common.identities import Authenticator
from flywheel_common.settings import (
    AuthSettings,
    ClientTlsSettings,
    GrpcSettings,
    ServerTlsSettings,
)
from flywheel_common.tls import ReloadingSslContext, TlsNotConfigured
from flywheel_testing.tls import pki

ANONYMOUS = Authenticator(AuthSettings(allow_anonymous=True))  # these tests are about TLS

SERVING = health_pb2.HealthCheckResponse.SERVING


async def health(address: str, tls: ClientTlsSettings) -> int:
    """The health status the server answers this client; raises AioRpcError when refused."""
    async with aio_channel(address, tls) as channel:
        response = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    return int(response.status)


async def refusal(address: str, tls: ClientTlsSettings) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await health(address, tls)
    return refused.value.code()


Serve = Callable[[GrpcSettings], Awaitable[GrpcServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Starts servers with given settings; stops them at the end of the test."""
    started: list[GrpcServer] = []

    async def start(settings: GrpcSettings) -> GrpcServer:
        server = GrpcServer(settings, [], ANONYMOUS)
        await server.start()
        await server.set_serving(True)
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


def server_files(
    ca: CertificateAuthority, folder: Path, days: int = 30, not_before: datetime | None = None
) -> ServerTlsSettings:
    folder.mkdir(parents=True, exist_ok=True)
    pair = ca.issue_server(days=days, not_before=not_before)
    pair.write(folder / "server.pem", folder / "server-key.pem")
    return ServerTlsSettings(cert_file=folder / "server.pem", key_file=folder / "server-key.pem")


async def test_a_client_trusting_the_ca_is_served_and_a_plaintext_client_is_refused(
    serve: Serve,
) -> None:
    server = await serve(GrpcSettings(tls=pki().server_tls()))
    assert await health(server.address, pki().client_tls()) == SERVING
    code = await refusal(server.address, ClientTlsSettings(enabled=False))
    assert code is grpc.StatusCode.UNAVAILABLE


async def test_a_client_trusting_another_ca_is_refused(serve: Serve, tmp_path: Path) -> None:
    server = await serve(GrpcSettings(tls=pki().server_tls()))
    other = CertificateAuthority.create("another CA")
    (tmp_path / "other-ca.pem").write_bytes(other.cert_pem)
    code = await refusal(server.address, ClientTlsSettings(ca_file=tmp_path / "other-ca.pem"))
    assert code is grpc.StatusCode.UNAVAILABLE


async def test_an_expired_server_certificate_is_refused_by_clients(
    serve: Serve, tmp_path: Path
) -> None:
    expired = server_files(
        pki().ca, tmp_path, days=1, not_before=datetime.now(UTC) - timedelta(days=3)
    )
    server = await serve(GrpcSettings(tls=expired))
    assert await refusal(server.address, pki().client_tls()) is grpc.StatusCode.UNAVAILABLE


async def test_mutual_tls_refuses_a_client_without_a_certificate_or_from_another_ca(
    serve: Serve, tmp_path: Path
) -> None:
    mutual = pki().server_tls(require_client_cert=True)
    server = await serve(GrpcSettings(tls=mutual))
    with_cert = pki().client_tls()
    assert await health(server.address, with_cert) == SERVING
    without_cert = ClientTlsSettings(ca_file=pki().ca_file)
    assert await refusal(server.address, without_cert) is grpc.StatusCode.UNAVAILABLE
    stranger = CertificateAuthority.create("another CA").issue_client("stranger")
    stranger.write(tmp_path / "stranger.pem", tmp_path / "stranger-key.pem")
    foreign_cert = with_cert.model_copy(
        update={"cert_file": tmp_path / "stranger.pem", "key_file": tmp_path / "stranger-key.pem"}
    )
    assert await refusal(server.address, foreign_cert) is grpc.StatusCode.UNAVAILABLE


def served_certificate(port: int) -> x509.Certificate:
    """The certificate a new TLS connection to the port is shown (verification off: this
    only looks)."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


async def test_a_replaced_certificate_is_served_to_new_connections_without_a_restart(
    serve: Serve, tmp_path: Path
) -> None:
    settings = server_files(pki().ca, tmp_path)
    server = await serve(GrpcSettings(tls=settings))
    async with aio_channel(server.address, pki().client_tls()) as old_connection:
        stub = health_pb2_grpc.HealthStub(old_connection)
        assert (await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == SERVING
        first = await asyncio.to_thread(served_certificate, server.port)

        # Rotation: a new CA's certificate replaces the files, as a renewal job would.
        new_ca = CertificateAuthority.create("rotated CA")
        server_files(new_ca, tmp_path)
        (tmp_path / "new-ca.pem").write_bytes(new_ca.cert_pem)
        second = await asyncio.to_thread(served_certificate, server.port)
        assert second.serial_number != first.serial_number
        assert second.issuer == new_ca.cert.subject

        trusting_new = ClientTlsSettings(ca_file=tmp_path / "new-ca.pem")
        assert await health(server.address, trusting_new) == SERVING
        code = await refusal(server.address, ClientTlsSettings(ca_file=pki().ca_file))
        assert code is grpc.StatusCode.UNAVAILABLE
        # The connection opened before the change keeps working.
        assert (await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)).status == SERVING


async def test_a_broken_replacement_keeps_the_previous_certificate(
    serve: Serve, tmp_path: Path
) -> None:
    settings = server_files(pki().ca, tmp_path)
    server = await serve(GrpcSettings(tls=settings))
    first = await asyncio.to_thread(served_certificate, server.port)
    # A new certificate written before its key: the pair does not match yet.
    pki().ca.issue_server().write(tmp_path / "server.pem", tmp_path / "unused-key.pem")
    assert await health(server.address, pki().client_tls()) == SERVING
    assert (await asyncio.to_thread(served_certificate, server.port)).serial_number == (
        first.serial_number
    )


async def test_tls_on_without_files_refuses_to_start_naming_the_variables() -> None:
    server = GrpcServer(GrpcSettings(), [], ANONYMOUS, env_prefix="FLYWHEEL_GATEWAY_")
    with pytest.raises(TlsNotConfigured) as refused:
        await server.start()
    message = str(refused.value)
    assert "FLYWHEEL_GATEWAY_GRPC__TLS__CERT_FILE" in message
    assert "FLYWHEEL_GATEWAY_GRPC__TLS__KEY_FILE" in message
    assert "FLYWHEEL_GATEWAY_GRPC__TLS__ENABLED=false" in message


async def test_plaintext_only_when_chosen(serve: Serve) -> None:
    tls = ServerTlsSettings(enabled=False)
    server = await serve(GrpcSettings(tls=tls))
    assert await health(server.address, ClientTlsSettings(enabled=False)) == SERVING
    assert await refusal(server.address, pki().client_tls()) is grpc.StatusCode.UNAVAILABLE


async def test_an_https_port_on_the_same_files_serves_a_replaced_certificate_too(
    tmp_path: Path,
) -> None:
    """A service's HTTPS port (the drift reports) follows its files as gRPC does: a new
    pair for the next handshake, a half-written one ignored."""
    settings = server_files(pki().ca, tmp_path)
    context = ReloadingSslContext(settings).context
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        first = await asyncio.to_thread(served_certificate, port)
        server_files(CertificateAuthority.create("rotated CA"), tmp_path)
        second = await asyncio.to_thread(served_certificate, port)
        pki().ca.issue_server().write(tmp_path / "server.pem", tmp_path / "unused-key.pem")
        third = await asyncio.to_thread(served_certificate, port)
    finally:
        server.close()
    assert second.serial_number != first.serial_number
    assert third.serial_number == second.serial_number
