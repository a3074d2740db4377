"""KServe V2 / Open Inference Protocol over HTTP/REST, beside gRPC: the same use case
(routing, checks, batching, prediction logs, metrics), the same bearer tokens and the same
certificate.

Endpoints: `GET /v2/health/live` and `/v2/health/ready` (200 or 400, empty bodies, no token
needed: load balancers and probes call them), `GET /v2` (server metadata),
`GET /v2/models/{name}[/versions/{v}]` (model metadata) and `.../ready` (200 or 400), and
`POST /v2/models/{name}[/versions/{v}]/infer` (JSON tensors and the binary tensor data
extension, rest_codec.py). Every other answer that is not a 200 is the protocol's JSON error,
`{"error": "..."}`, with the HTTP status of the Flywheel error behind it. The other
endpoints need the reader role: on the model they name, or on some model for `/v2`.

Built on aiohttp's server, which runs on the gateway's own event loop beside grpc.aio
(bench/RESULTS.md has the measurement that chose it).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from aiohttp import web
from opentelemetry import metrics, propagate, trace

from flywheel_common import errors
from flywheel_common.auth import missing_grant, record_denial, set_current_principal
from flywheel_common.grpc_server import NOT_READY
from flywheel_common.http_status import INTERNAL, challenge_of, http_status_of
from flywheel_common.identities import Authenticator
from flywheel_common.settings import GrpcSettings, Role
from flywheel_common.telemetry import ServerSpan
from flywheel_common.tls import https_context, served_url
from flywheel_gateway import rest_codec
from flywheel_gateway.handlers import SERVER_NAME, SERVER_VERSION, Inference
from flywheel_gateway.settings import HttpSettings

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)
_duration = metrics.get_meter(__name__).create_histogram(
    "flywheel.http.server.duration", unit="ms", description="Duration of served HTTP requests"
)

EXTENSIONS = ["binary_tensor_data"]
"""The protocol's HTTP extensions this server speaks, as server metadata lists them."""

COMPRESSED_FROM = 1024
"""Smallest infer answer compressed for a caller that accepts gzip or deflate. A smaller
one fits in one packet anyway, and compressing it cost about 50 us of the server's CPU
(bench/RESULTS.md, issue 17): the batch-1 answer of a classifier is some 250 bytes."""

MODEL = "/v2/models/{model}"
MODEL_VERSION = "/v2/models/{model}/versions/{version}"

Action = Callable[[], Awaitable[web.Response]]


class RestApi:
    """The gateway's HTTP server (a service component)."""

    def __init__(
        self,
        settings: HttpSettings,
        grpc: GrpcSettings,
        authenticator: Authenticator,
        inference: Inference,
        is_ready: Callable[[], bool],
        env_prefix: str = "FLYWHEEL_GATEWAY_",
    ) -> None:
        """`is_ready`: whether the service serves (until then, only health answers 200)."""
        self._settings = settings
        self._grpc = grpc
        self._host = settings.host or grpc.host
        self._authenticator = authenticator
        self._inference = inference
        self._is_ready = is_ready
        self._env_prefix = env_prefix
        self._runner: web.AppRunner | None = None
        self.port = 0
        """The port bound, once started."""

    @property
    def url(self) -> str:
        return served_url(self._host, self.port, self._grpc.tls)

    async def start(self) -> None:
        app = web.Application(
            client_max_size=self._grpc.max_message_bytes, middlewares=[_protocol_errors]
        )
        app.router.add_get("/v2/health/live", self._live)
        app.router.add_get("/v2/health/ready", self._ready)
        app.router.add_get("/v2", self._server_metadata)
        for path in (MODEL, MODEL_VERSION):
            app.router.add_get(path, self._model_metadata)
            app.router.add_get(path + "/ready", self._model_ready)
            app.router.add_post(path + "/infer", self._infer)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self._host,
            self._settings.port,
            ssl_context=https_context(self._grpc.tls, self._env_prefix, "the REST API is"),
            reuse_port=self._grpc.reuse_port or None,
        )
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("KServe V2 REST API served", extra={"url": self.url + "/v2"})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _live(self, request: web.Request) -> web.Response:
        return web.Response()

    async def _ready(self, request: web.Request) -> web.Response:
        return web.Response(status=200 if self._is_ready() else 400)

    async def _server_metadata(self, request: web.Request) -> web.Response:
        async def action() -> web.Response:
            body = rest_codec.server_metadata(SERVER_NAME, SERVER_VERSION, EXTENSIONS)
            return _json(body)

        return await self._served(request, None, action)

    async def _model_metadata(self, request: web.Request) -> web.Response:
        model, version = _named(request)

        async def action() -> web.Response:
            described = await self._inference.describe(model, version)
            return _json(rest_codec.model_metadata(described))

        return await self._served(request, model, action)

    async def _model_ready(self, request: web.Request) -> web.Response:
        model, version = _named(request)

        async def action() -> web.Response:
            ready = self._inference.is_model_ready(model, version)
            return web.Response(status=200 if ready else 400)

        return await self._served(request, model, action)

    async def _infer(self, request: web.Request) -> web.Response:
        model, version = _named(request)

        async def action() -> web.Response:
            body = await request.read()
            call, form = rest_codec.infer_request(
                model, version, body, request.headers.get(rest_codec.HEADER_LENGTH)
            )
            encoded = rest_codec.infer_response(await self._inference.infer(call), form)
            response = web.Response(
                body=encoded.body, content_type=encoded.content_type, headers=encoded.headers
            )
            if len(encoded.body) >= COMPRESSED_FROM:
                response.enable_compression()  # when the caller accepts gzip or deflate
            return response

        return await self._served(request, model, action)

    async def _served(
        self, request: web.Request, model: str | None, action: Action
    ) -> web.Response:
        """Runs `action` for an authorized caller in a server span that continues the
        caller's trace (W3C `traceparent` header); maps errors to the protocol's JSON
        errors, records and logs the outcome."""
        started = time.perf_counter()
        route = request.match_info.route.resource.canonical  # type: ignore[union-attr]
        name = f"{request.method} {route}"
        subject: str | None = None
        with ServerSpan(
            _tracer,
            name,
            propagate.extract(request.headers),
            {"http.request.method": request.method, "http.route": route},
        ) as span:
            try:
                if not self._is_ready():
                    raise NOT_READY
                principal = await self._authenticator.authenticate(
                    request.headers.get("Authorization")
                )
                subject = principal.subject
                allowed = (
                    principal.allows_some_model(Role.READER)
                    if model is None
                    else principal.allows(Role.READER, model)
                )
                if not allowed:
                    raise missing_grant(principal, Role.READER, model, name)
                set_current_principal(principal, name)
                response = await action()
            except errors.FlywheelError as error:
                if isinstance(error, errors.Unauthenticated | errors.PermissionDenied):
                    record_denial(name, error, subject, model)
                response = _error(http_status_of(error), error.message)
            except web.HTTPRequestEntityTooLarge as too_large:
                response = _error(
                    too_large.status,
                    f"the request body is larger than the {self._grpc.max_message_bytes} bytes "
                    f"this gateway accepts ({self._env_prefix}GRPC__MAX_MESSAGE_BYTES)",
                )
            except Exception as exc:
                incident = uuid.uuid4().hex[:12]
                log.exception("unexpected error", extra={"method": name, "incident": incident})
                span.record_exception(exc)
                response = _error(
                    INTERNAL, f"internal error (incident {incident}); see the server log"
                )
            status = response.status
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(trace.StatusCode.ERROR, str(status))
        duration_ms = (time.perf_counter() - started) * 1000
        _duration.record(
            duration_ms,
            {"http.request.method": request.method, "http.route": route, "status": status},
        )
        log.info(
            "http",
            extra={
                "method": name,
                "status": status,
                "principal": subject or "unknown",
                "duration_ms": round(duration_ms, 3),
            },
        )
        return response


def _named(request: web.Request) -> tuple[str, str]:
    """The model and version (empty when not named) of a model endpoint's path."""
    return request.match_info["model"], request.match_info.get("version", "")


def _json(body: bytes) -> web.Response:
    return web.Response(body=body, content_type=rest_codec.JSON_TYPE)


def _error(status: int, message: str) -> web.Response:
    return web.Response(
        status=status,
        body=rest_codec.error_body(message),
        content_type=rest_codec.JSON_TYPE,
        headers=challenge_of(status),
    )


@web.middleware
async def _protocol_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own refusals (no such path, a method a path does not take) as the
    protocol's JSON errors, saying which endpoints there are."""
    try:
        return await handler(request)
    except web.HTTPException as refusal:
        if refusal.status < 400:
            raise
        return _error(
            refusal.status,
            f"{request.method} {request.path}: {refusal.reason}; the KServe V2 endpoints are "
            "GET /v2, /v2/health/live, /v2/health/ready, /v2/models/NAME[/versions/V] and "
            "its /ready, and POST /v2/models/NAME[/versions/V]/infer",
        )
