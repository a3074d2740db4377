"""gRPC server bootstrap: grpc.aio, health, reflection, tracing, logging, auth, error mapping."""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NoReturn, TypeAlias, cast

import grpc
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry import context as otel_context
from opentelemetry import metrics, propagate, trace

from flywheel_common import errors
from flywheel_common.auth import (
    AccessRefused,
    CredentialsRefused,
    Principal,
    log_allowed,
    missing_grant,
    record_denial,
    set_current_principal,
)
from flywheel_common.identities import Authenticator
from flywheel_common.settings import GrpcSettings, Role
from flywheel_common.telemetry import ServerSpan
from flywheel_common.tls import server_credentials

log = logging.getLogger(__name__)
_tracer = trace.get_tracer(__name__)
_rpc_duration = metrics.get_meter(__name__).create_histogram(
    "flywheel.rpc.server.duration", unit="ms", description="Duration of served RPCs"
)

# The single mapping from Flywheel's errors to gRPC status codes.
STATUS_OF_ERROR: Mapping[type[errors.FlywheelError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.Aborted: grpc.StatusCode.ABORTED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
    errors.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}

HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = (
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
)
_READ_PREFIXES = ("Get", "List", "Search", "Watch", "Server", "Model")

# grpc's classes are generic only in its type stubs, so these aliases stay strings at run time.
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Behavior: TypeAlias = Callable[..., Any]


def status_of(exc: errors.FlywheelError) -> grpc.StatusCode:
    for error_type in type(exc).__mro__:
        if error_type in STATUS_OF_ERROR:
            return STATUS_OF_ERROR[error_type]
    return grpc.StatusCode.INTERNAL


def default_role(method_name: str) -> Role:
    """Reads need `reader`; everything else needs `writer` unless the binding says more."""
    return Role.READER if method_name.startswith(_READ_PREFIXES) else Role.WRITER


ModelOf: TypeAlias = Callable[[Any], str]
"""Reads the name of the model a call acts on from its request (from the first message of a
client stream)."""


class Unscoped(StrEnum):
    """Why a method names no model in its request, and how it is scoped instead."""

    CHECKED_IN_USE_CASE = "checked in the use case"
    """It names a rollout or a run: the use case checks the model it loads."""
    FILTERED = "filtered"
    """A listing: it answers only with the models the caller may read."""
    SERVER = "server"
    """About the server, not a model (ServerLive, ServerMetadata)."""


Scope: TypeAlias = "ModelOf | Unscoped"


def model_field(path: str) -> ModelOf:
    """A ModelOf reading a (dotted) field, for example `model` or `metadata.model`."""
    names = path.split(".")

    def read(request: Any) -> str:
        value = request
        for name in names:
            value = getattr(value, name)
        return cast(str, value)

    return read


@dataclass(frozen=True)
class ServiceBinding:
    """A servicer to serve, with the roles its methods require and the model each acts on."""

    name: str
    """Full service name, for example flywheel.registry.v1.RegistryService."""
    register: Callable[[Any, grpc.aio.Server], None]
    """The generated add_XServicer_to_server function."""
    servicer: Any
    method_roles: Mapping[str, Role] = field(default_factory=dict)
    """Overrides by method name (for example {"SetAlias": Role.WRITER})."""
    scopes: Mapping[str, Scope] = field(default_factory=dict)
    """For every method: how its request names the model the caller needs the role on, or
    why it names none. The server refuses to start with a method left out."""
    before_ready: frozenset[str] = frozenset()
    """Methods answered while the service is not ready (liveness and readiness probes);
    every other method answers UNAVAILABLE then, which clients retry."""

    def required_role(self, method_name: str) -> Role:
        return self.method_roles.get(method_name, default_role(method_name))

    def model_of(self, method_name: str) -> ModelOf | None:
        scope = self.scopes.get(method_name)
        return None if scope is None or isinstance(scope, Unscoped) else scope

    def check_scopes(self) -> None:
        methods = descriptor_pool.Default().FindServiceByName(self.name).methods
        missing = sorted(m.name for m in methods if m.name not in self.scopes)
        if missing:
            raise ValueError(
                f"{self.name}: declare in the binding's scopes how {', '.join(missing)} "
                "name the model they act on (or why they name none)"
            )


NOT_READY = errors.Unavailable(
    "the service is not ready (starting, or stopping after a failure); retry, as the gRPC "
    "retry policy in README's Configuration does"
)


MAX_CACHED_HANDLERS = 10_000


class _CallInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates, authorizes, traces, measures, logs and maps Flywheel errors for every
    business RPC.

    One interceptor does it all, and keeps the handler it wraps for each method and caller:
    grpc.aio awaits every interceptor on every call, and the gateway serves thousands of
    calls a second per core (OpenTelemetry's own gRPC interceptor, in front of this one,
    cost a fifth of its throughput). The interceptor cannot see the request: it checks the
    caller holds the method's role on some model, and the wrapped handler checks the model
    the request names.
    """

    def __init__(self, bindings: Sequence[ServiceBinding], authenticator: Authenticator):
        self._bindings = {binding.name: binding for binding in bindings}
        self._authenticator = authenticator
        self._wrapped: dict[tuple[str, Principal], tuple[Handler, Handler]] = {}
        self._decoding_handlers: dict[str, tuple[Handler, Handler]] = {}
        self.ready = False
        """Set with health: until then (and after a failure) calls answer UNAVAILABLE."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(details)
        service_name, _, method_name = details.method.lstrip("/").partition("/")
        binding = self._bindings.get(service_name)
        if handler is None:
            return None  # an unknown method: UNIMPLEMENTED
        if binding is None:
            return self._decoding(details.method, handler)  # health and reflection
        if not self.ready and method_name not in binding.before_ready:
            return _rejecting_handler(handler, NOT_READY)
        authorization = dict(details.invocation_metadata or ()).get("authorization")
        if isinstance(authorization, bytes):
            authorization = authorization.decode(errors="replace")
        try:
            principal = await self._authenticator.authenticate(authorization)
        except CredentialsRefused as unauthenticated:
            record_denial(details.method, unauthenticated, None)
            return _rejecting_handler(handler, unauthenticated)
        except errors.FlywheelError as exc:
            return _rejecting_handler(handler, exc)
        key = (details.method, principal)
        cached = self._wrapped.get(key)
        if cached is None or cached[0] is not handler:
            # Only a caller allowed in before has a cached handler: the hot path skips this.
            required = binding.required_role(method_name)
            if not principal.allows_some_model(required):
                refusal = missing_grant(principal, required, None, method_name)
                record_denial(details.method, refusal, principal.subject)
                return _rejecting_handler(handler, refusal)
            model_of = binding.model_of(method_name)
            if model_of is not None and principal.allows_every_model(required):
                model_of = None  # nothing to check per request: the hot path stays lean
            guard = None if model_of is None else _ModelGuard(principal, required, model_of)
            if len(self._wrapped) >= MAX_CACHED_HANDLERS:
                self._wrapped.clear()
            cached = (handler, _wrap_handler(handler, details.method, principal, guard))
            self._wrapped[key] = cached
            log_allowed(details.method, principal, None)
        return cached[1]

    def _decoding(self, method: str, handler: Handler) -> Handler:
        cached = self._decoding_handlers.get(method)
        if cached is None or cached[0] is not handler:
            cached = (handler, _decoding_handler(handler, method))
            self._decoding_handlers[method] = cached
        return cached[1]


MAX_DETAILS = 2048
"""Characters of an error message sent to the caller. Messages may quote the caller's
input, and status details travel as a header: a client refuses headers past 16 KiB and
reports its own error instead of the status."""


def _details(message: str) -> str:
    if len(message) <= MAX_DETAILS:
        return message
    return message[: MAX_DETAILS - 16] + " ... (truncated)"


MAX_CACHED_DECISIONS = 4096


class _ModelGuard:
    """Checks the model a request names against one caller's grants for one method,
    remembering its decisions (a client calls the same few models again and again)."""

    def __init__(self, principal: Principal, required: Role, model_of: ModelOf) -> None:
        self._principal = principal
        self._required = required
        self._model_of = model_of
        self._allowed: dict[str, bool] = {}

    def check(self, method: str, request: Any) -> None:
        model = self._model_of(request)
        allowed = self._allowed.get(model)
        if allowed is None:
            if not model:
                raise errors.InvalidArgument(f"{method.rpartition('/')[2]} needs a model name")
            allowed = self._principal.allows(self._required, model)
            if len(self._allowed) >= MAX_CACHED_DECISIONS:
                self._allowed.clear()
            self._allowed[model] = allowed
        if not allowed:
            refusal = missing_grant(
                self._principal, self._required, model, method.rpartition("/")[2]
            )
            record_denial(method, refusal, self._principal.subject, model)
            raise refusal


async def _abort_with(context: Context, exc: errors.FlywheelError) -> NoReturn:
    await context.abort(status_of(exc), _details(exc.message))


async def _abort_internal(context: Context, method: str) -> NoReturn:
    incident = uuid.uuid4().hex[:12]
    log.exception("unexpected error", extra={"method": method, "incident": incident})
    await context.abort(
        grpc.StatusCode.INTERNAL, f"internal error (incident {incident}); see the server log"
    )


def _span_attributes(method: str) -> dict[str, str]:
    service, _, name = method.lstrip("/").partition("/")
    return {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name}


class _ServedCall:
    """One call run as `principal`: `fail` answers it with the status an error maps to, `end`
    records and logs its outcome on its server span.

    Plain methods around the behavior, not an async context manager: this runs on every call
    of every service, and the context manager's own machinery cost 2.6 us a call where the
    same `try` written inline costs 0.1 us (bench/RESULTS.md)."""

    __slots__ = ("_code", "_context", "_method", "_principal", "_started")

    def __init__(self, context: Context, method: str, principal: Principal) -> None:
        set_current_principal(principal, method)
        self._context = context
        self._method = method
        self._principal = principal
        self._started = time.perf_counter()
        self._code = grpc.StatusCode.OK

    def caller(self) -> otel_context.Context:
        """The caller's trace context, from its W3C `traceparent` metadata."""
        return propagate.extract(dict(self._context.invocation_metadata() or ()))

    async def fail(self, exc: Exception, span: trace.Span) -> NoReturn:
        if isinstance(exc, errors.FlywheelError):
            self._code = status_of(exc)
            if isinstance(exc, errors.Unauthenticated | errors.PermissionDenied) and not isinstance(
                exc, CredentialsRefused | AccessRefused
            ):
                record_denial(self._method, exc, self._principal.subject)  # a use case's rule
            await _abort_with(self._context, exc)
        if isinstance(exc, grpc.aio.AbortError):
            self._code = self._context.code()
            raise exc
        self._code = grpc.StatusCode.INTERNAL
        span.record_exception(exc)
        await _abort_internal(self._context, self._method)

    def end(self, span: trace.Span) -> None:
        code = self._code
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code is not grpc.StatusCode.OK:
            span.set_status(trace.StatusCode.ERROR, code.name)
        duration_ms = (time.perf_counter() - self._started) * 1000
        _rpc_duration.record(
            duration_ms, {"rpc.method": self._method, "rpc.grpc.status_code": code.name}
        )
        log.info(
            "rpc",
            extra={
                "method": self._method,
                "code": code.name,
                "principal": self._principal.subject,
                "duration_ms": round(duration_ms, 3),
            },
        )


MAX_DRAINED_MESSAGES = 64


async def _drain(request: Any) -> None:
    """Read what a client-streaming caller is still sending before answering it with an
    error: a grpc.aio client whose write fails after the call ended reports INTERNAL instead
    of the server's status (grpc/grpc#36066). Bounded, so a refused caller cannot hold the
    call open by sending forever."""
    if not hasattr(request, "__aiter__"):
        return
    drained = 0
    async for _ in request:
        drained += 1
        if drained >= MAX_DRAINED_MESSAGES:
            return


@dataclass(frozen=True)
class _Undecodable:
    """What a request deserializer gives instead of raising for bytes that do not parse: gRPC
    runs the deserializer before any handler and answers UNKNOWN when it raises, so the
    failure travels to the behavior as a value and is raised there as INVALID_ARGUMENT."""

    error: errors.InvalidArgument


def _tolerant(deserializer: Callable[[bytes], Any] | None, method: str) -> Callable[[bytes], Any]:
    message_type = _message_type(deserializer, method)

    def decode(data: bytes) -> Any:
        if deserializer is None:
            return data
        try:
            return deserializer(data)
        except Exception as exc:
            return _Undecodable(
                errors.InvalidArgument(
                    f"the request is not a valid {message_type} ({exc}); send a serialized "
                    f"{message_type}"
                )
            )

    return decode


def _message_type(deserializer: Callable[[bytes], Any] | None, method: str) -> str:
    """The full protobuf name the deserializer parses (the generated code passes the
    message class's FromString), else the method's request message."""
    message_class = getattr(deserializer, "__self__", None)
    descriptor = getattr(message_class, "DESCRIPTOR", None)
    fallback = f"request message of {method}" if method else "request message"
    return str(getattr(descriptor, "full_name", fallback))


def _decoded(request: Any, streamed: bool) -> Any:
    """The request the servicer sees: an undecodable message raises InvalidArgument, at once
    for a single request, when the servicer reaches it in a stream. (`streamed` is the
    handler's to say: asking a protobuf message for `__aiter__` costs a failed lookup.)"""
    if isinstance(request, _Undecodable):
        raise request.error
    return _decoded_stream(request) if streamed else request


async def _decoded_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, _Undecodable):
            raise request.error
        yield request


def _decoding_handler(handler: Handler, method: str) -> Handler:
    """`handler` with undecodable requests answered INVALID_ARGUMENT, and nothing else added:
    for health and reflection, whose probes need no principal, span or log line."""
    behavior = cast(
        Behavior,
        handler.unary_unary
        or handler.unary_stream
        or handler.stream_unary
        or handler.stream_stream,
    )
    streamed_request = handler.request_streaming

    async def unary_response(request: Any, context: Context) -> Any:
        try:
            return await behavior(_decoded(request, streamed_request), context)
        except errors.InvalidArgument as exc:
            await _drain(request)
            await _abort_with(context, exc)

    async def stream_response(request: Any, context: Context) -> AsyncIterator[Any]:
        try:
            async for response in behavior(_decoded(request, streamed_request), context):
                yield response
        except errors.InvalidArgument as exc:
            await _drain(request)
            await _abort_with(context, exc)

    # A streaming behavior either yields its responses or writes them with context.write
    # (grpc.aio's health Watch does) and returns; its wrapper must be of the same kind.
    writes = not inspect.isasyncgenfunction(behavior)
    return _replace_behavior(
        handler, method, unary_response, unary_response if writes else stream_response
    )


def _rejecting_handler(handler: Handler, exc: errors.FlywheelError) -> Handler:
    async def reject_unary(request: Any, context: Context) -> Any:
        await _drain(request)
        await _abort_with(context, exc)

    async def reject_stream(request: Any, context: Context) -> AsyncIterator[Any]:
        await _drain(request)
        await _abort_with(context, exc)
        yield  # type: ignore[unreachable]  # makes this an async generator

    return _replace_behavior(handler, "", reject_unary, reject_stream)


async def _chained(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    yield first
    async for message in rest:
        yield message


def _wrap_handler(
    handler: Handler, method: str, principal: Principal, guard: _ModelGuard | None
) -> Handler:
    attributes = _span_attributes(method)
    # Under grpc.aio the behaviors are coroutines or async generators; the stubs describe
    # the sync API, hence the cast.
    behavior = cast(
        Behavior,
        handler.unary_unary
        or handler.unary_stream
        or handler.stream_unary
        or handler.stream_stream,
    )
    streamed_request = handler.request_streaming

    async def guarded(request: Any) -> Any:
        """The request the servicer sees (`_decoded`), once the caller is known to hold the
        role on the model it names (for a client stream, the first message names it)."""
        request = _decoded(request, streamed_request)
        if guard is None:
            return request
        if not streamed_request:
            guard.check(method, request)
            return request
        first = await anext(aiter(request), None)
        if first is None:
            return request
        guard.check(method, first)
        return _chained(first, request)

    # Each call runs in a server span that continues the caller's trace; its errors are
    # answered with their statuses, and its outcome recorded and logged.
    async def unary_response(request: Any, context: Context) -> Any:
        call = _ServedCall(context, method, principal)
        with ServerSpan(_tracer, method, call.caller(), attributes) as span:
            try:
                try:
                    return await behavior(await guarded(request), context)
                except errors.FlywheelError:
                    await _drain(request)
                    raise
            except Exception as exc:
                await call.fail(exc, span)
            finally:
                call.end(span)

    async def stream_response(request: Any, context: Context) -> AsyncIterator[Any]:
        call = _ServedCall(context, method, principal)
        with ServerSpan(_tracer, method, call.caller(), attributes) as span:
            try:
                try:
                    checked = await guarded(request)
                except errors.FlywheelError:
                    await _drain(request)
                    raise
                async for response in behavior(checked, context):
                    yield response
            except Exception as exc:
                await call.fail(exc, span)
            finally:
                call.end(span)

    return _replace_behavior(handler, method, unary_response, stream_response)


def _replace_behavior(
    handler: Handler,
    method: str,
    unary_response: Behavior,
    stream_response: Behavior,
) -> Handler:
    """`handler` with new behaviors, and a request deserializer that never raises (see
    `_Undecodable`): every behavior passed here meets undecodable requests as values."""
    serializers = {
        "request_deserializer": _tolerant(handler.request_deserializer, method),
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(unary_response, **serializers)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary_response, **serializers)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(stream_response, **serializers)
    return grpc.stream_stream_rpc_method_handler(stream_response, **serializers)


class GrpcServer:
    """One grpc.aio server: business services plus health and reflection.

    Health reports NOT_SERVING until `set_serving(True)`, so probes and load balancers
    only route to a replica once its composition root has started everything else; until
    then business calls answer UNAVAILABLE (never an answer computed on a partial state).
    """

    def __init__(
        self,
        settings: GrpcSettings,
        bindings: Sequence[ServiceBinding],
        authenticator: Authenticator,
        env_prefix: str = "FLYWHEEL_<SERVICE>_",
    ) -> None:
        """`env_prefix`: of the service's variables, named when TLS is not configured."""
        self._settings = settings
        self._env_prefix = env_prefix
        self._bindings = list(bindings)
        self.health = HealthServicer()
        options = [
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
            ("grpc.so_reuseport", int(settings.reuse_port)),
        ]
        for binding in self._bindings:
            binding.check_scopes()
        self._interceptor = _CallInterceptor(self._bindings, authenticator)
        self._server = grpc.aio.server(interceptors=[self._interceptor], options=options)
        for binding in self._bindings:
            binding.register(binding.servicer, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection.enable_server_reflection(
            [binding.name for binding in self._bindings]
            + [HEALTH_SERVICE, reflection.SERVICE_NAME],
            self._server,
        )
        self.port = 0

    @property
    def address(self) -> str:
        return f"{self._settings.host}:{self.port}"

    async def start(self) -> None:
        """Bind the port, over TLS unless plaintext was chosen; raises TlsNotConfigured when
        TLS is on without a certificate."""
        credentials = server_credentials(self._settings.tls, self._env_prefix)
        bind = f"{self._settings.host}:{self._settings.port}"
        if credentials is None:
            self.port = self._server.add_insecure_port(bind)
        else:
            self.port = self._server.add_secure_port(bind, credentials)
        if self.port == 0:
            raise OSError(f"cannot bind gRPC to {self._settings.host}:{self._settings.port}")
        await self._server.start()
        await self.set_serving(False)
        log.info(
            "grpc server listening",
            extra={"address": self.address, "tls": credentials is not None},
        )

    async def set_serving(self, serving: bool) -> None:
        self._interceptor.ready = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *(binding.name for binding in self._bindings)]:
            await self.health.set(name, status)

    async def stop(self) -> None:
        """Refuse new calls, let in-flight ones finish within the grace period."""
        await self.health.enter_graceful_shutdown()
        await self._server.stop(self._settings.shutdown_grace_seconds)
        log.info("grpc server stopped")
