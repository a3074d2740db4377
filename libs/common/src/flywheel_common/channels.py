"""The one way to open a gRPC channel to a Flywheel service: TLS from settings (the CA to
trust, a client certificate for mutual TLS), plaintext only when chosen explicitly."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
from opentelemetry.instrumentation.grpc import aio_client_interceptors

from flywheel_common.settings import ClientTlsSettings

ChannelOption = tuple[str, Any]


def channel_credentials(tls: ClientTlsSettings, token: str = "") -> grpc.ChannelCredentials:
    """The TLS credentials of `tls`, files read now (a channel keeps them for its life), and
    with `token`, the bearer token sent on every call."""
    root = tls.ca_file.read_bytes() if tls.ca_file is not None else None
    key = tls.key_file.read_bytes() if tls.key_file is not None else None
    chain = tls.cert_file.read_bytes() if tls.cert_file is not None else None
    credentials = grpc.ssl_channel_credentials(root, key, chain)
    if not token:
        return credentials
    return grpc.composite_channel_credentials(
        credentials, grpc.access_token_call_credentials(token)
    )


def _plaintext(tls: ClientTlsSettings, token: str) -> None:
    if token:
        raise ValueError(
            "a bearer token is only sent over TLS: enable TLS, or pass the token as call "
            "metadata yourself when a mesh encrypts the plaintext channel"
        )


def _traced_calls() -> list[grpc.aio.ClientInterceptor]:
    """OpenTelemetry's client interceptors: a span per call, its context in the metadata."""
    interceptors: list[grpc.aio.ClientInterceptor] = aio_client_interceptors()  # type: ignore[no-untyped-call]
    return interceptors


def _options(tls: ClientTlsSettings, options: Sequence[ChannelOption]) -> list[ChannelOption]:
    if tls.enabled and tls.server_name:
        return [*options, ("grpc.ssl_target_name_override", tls.server_name)]
    return list(options)


def aio_channel(
    target: str,
    tls: ClientTlsSettings,
    options: Sequence[ChannelOption] = (),
    token: str = "",
) -> grpc.aio.Channel:
    """An asyncio channel to `target` (host:port) over TLS, or plaintext when tls.enabled is
    false; with `token`, every call carries `authorization: Bearer <token>`. Every call is
    a client span whose W3C `traceparent` goes with it, so the server continues the trace."""
    if not tls.enabled:
        _plaintext(tls, token)
        return grpc.aio.insecure_channel(
            target, options=list(options), interceptors=_traced_calls()
        )
    credentials = channel_credentials(tls, token)
    return grpc.aio.secure_channel(
        target, credentials, _options(tls, options), interceptors=_traced_calls()
    )


def sync_channel(
    target: str,
    tls: ClientTlsSettings,
    options: Sequence[ChannelOption] = (),
    token: str = "",
) -> grpc.Channel:
    """A blocking channel, for scripts and threads without an event loop. Not traced:
    OpenTelemetry's blocking interceptor turns a server-streaming call into a plain
    generator, without the `cancel()` and status of gRPC's own."""
    if not tls.enabled:
        _plaintext(tls, token)
        return grpc.insecure_channel(target, options=list(options))
    credentials = channel_credentials(tls, token)
    return grpc.secure_channel(target, credentials, _options(tls, options))
