"""The gRPC bootstrap over real loopback: auth, error mapping, health, reflection, draining."""

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from flywheel.registry.v1.events_pb2 import ModelVersionRegistered
from flywheel_common.auth import Grant, current_principal
from flywheel_common.consumer import EventConsumer
from flywheel_common.errors import NotFound
from flywheel_common.events import Envelope
from flywheel_common.grpc_server import GrpcServer, ServiceBinding, Unscoped, model_field
from flywheel_common.identities import Authenticator
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import AuthSettings, KafkaSettings, Role
from flywheel_common.telemetry import continued_trace
from flywheel_common.topics import Cleanup, TopicSpec
from flywheel_testing.plugin import NewTopicFactory
from flywheel_testing.tls import grpc_settings, secure_channel
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

SERVICE = "inference.GRPCInferenceService"
TOKENS = {"reader-token": Role.READER, "writer-token": Role.WRITER, "admin-token": Role.ADMIN}
SCOPES = {
    "ServerLive": Unscoped.SERVER,
    "ServerReady": Unscoped.SERVER,
    "ServerMetadata": Unscoped.SERVER,
    "ModelReady": model_field("name"),
    "ModelMetadata": model_field("name"),
    "ModelInfer": model_field("model_name"),
}


class ExampleServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Each method exercises one path of the interceptor."""

    def __init__(self) -> None:
        self.publisher: EventPublisher | None = None
        self.topic: TopicSpec | None = None
        self.slow_call_started = asyncio.Event()

    async def ServerLive(
        self, request: pb.ServerLiveRequest, context: object
    ) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=current_principal().grants == (Grant(Role.READER),))

    async def ServerReady(
        self, request: pb.ServerReadyRequest, context: object
    ) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(
        self, request: pb.ModelReadyRequest, context: object
    ) -> pb.ModelReadyResponse:
        raise NotFound(f"model {request.name!r} does not exist; list models with ListModels")

    async def ModelMetadata(
        self, request: pb.ModelMetadataRequest, context: object
    ) -> pb.ModelMetadataResponse:
        raise ZeroDivisionError("a bug")

    async def ServerMetadata(
        self, request: pb.ServerMetadataRequest, context: object
    ) -> pb.ServerMetadataResponse:
        self.slow_call_started.set()
        await asyncio.sleep(1.0)
        return pb.ServerMetadataResponse(name="slow but finished")

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: object
    ) -> pb.ModelInferResponse:
        assert self.publisher is not None
        assert self.topic is not None
        await self.publisher.publish(
            self.topic, ModelVersionRegistered(model=request.model_name, version=1), subject="iris"
        )
        return pb.ModelInferResponse(model_name=request.model_name, id=request.id)


@pytest.fixture
async def server(
    span_exporter: InMemorySpanExporter,
) -> AsyncIterator[tuple[GrpcServer, ExampleServicer]]:
    servicer = ExampleServicer()
    binding = ServiceBinding(
        SERVICE,
        pb_grpc.add_GRPCInferenceServiceServicer_to_server,
        servicer,
        method_roles={"ServerReady": Role.ADMIN, "ServerMetadata": Role.READER},
        scopes=SCOPES,
    )
    grpc_server = GrpcServer(
        grpc_settings(port=0, shutdown_grace_seconds=5),
        [binding],
        Authenticator(AuthSettings(tokens=dict(TOKENS))),
    )
    await grpc_server.start()
    await grpc_server.set_serving(True)
    yield grpc_server, servicer
    await grpc_server.stop()


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def test_calls_without_a_valid_token_are_unauthenticated(
    server: tuple[GrpcServer, ExampleServicer],
) -> None:
    async with secure_channel(server[0].address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await stub.ServerLive(pb.ServerLiveRequest())
        assert missing.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert "Bearer <token>" in (missing.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as wrong:
            await stub.ServerLive(pb.ServerLiveRequest(), metadata=bearer("nope"))
        assert wrong.value.code() is grpc.StatusCode.UNAUTHENTICATED


async def test_roles_gate_methods_and_reach_the_handler(
    server: tuple[GrpcServer, ExampleServicer],
) -> None:
    async with secure_channel(server[0].address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        live = await stub.ServerLive(pb.ServerLiveRequest(), metadata=bearer("reader-token"))
        assert live.live  # the handler saw the caller's role
        as_admin = await stub.ServerLive(pb.ServerLiveRequest(), metadata=bearer("admin-token"))
        assert not as_admin.live  # the next caller of the same method is served as itself
        again = await stub.ServerLive(pb.ServerLiveRequest(), metadata=bearer("reader-token"))
        assert again.live
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await stub.ServerReady(pb.ServerReadyRequest(), metadata=bearer("writer-token"))
        assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
        assert "ServerReady needs role admin" in (denied.value.details() or "")
        ready = await stub.ServerReady(pb.ServerReadyRequest(), metadata=bearer("admin-token"))
        assert ready.ready


async def test_flywheel_errors_map_to_precise_statuses(
    server: tuple[GrpcServer, ExampleServicer],
) -> None:
    async with secure_channel(server[0].address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as not_found:
            await stub.ModelReady(
                pb.ModelReadyRequest(name="ghost"), metadata=bearer("reader-token")
            )
        assert not_found.value.code() is grpc.StatusCode.NOT_FOUND
        assert (
            not_found.value.details() == "model 'ghost' does not exist; list models with ListModels"
        )
        with pytest.raises(grpc.aio.AioRpcError) as bug:
            await stub.ModelMetadata(
                pb.ModelMetadataRequest(name="x"), metadata=bearer("reader-token")
            )
        assert bug.value.code() is grpc.StatusCode.INTERNAL
        assert "incident" in (bug.value.details() or "")


async def test_health_and_reflection_need_no_token_and_health_checks_are_not_traced(
    server: tuple[GrpcServer, ExampleServicer], span_exporter: InMemorySpanExporter
) -> None:
    span_exporter.clear()
    async with secure_channel(server[0].address) as channel:
        await pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(
            pb.ServerLiveRequest(), metadata=bearer("reader-token")
        )
        for name in ("", SERVICE):
            response = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=name)
            )
            assert response.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = reflection.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        )
        async for response in responses:
            names = {service.name for service in response.list_services_response.service}
            assert {SERVICE, "grpc.health.v1.Health"} <= names
            break
    # Probes every few seconds would bury real traces: only the business call is a span.
    server_spans = [s.name for s in span_exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert any(name.endswith("ServerLive") for name in server_spans), server_spans
    assert not [name for name in server_spans if "Health" in name]


async def test_server_spans_continue_the_callers_trace_and_carry_the_status(
    server: tuple[GrpcServer, ExampleServicer], span_exporter: InMemorySpanExporter
) -> None:
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    span_exporter.clear()
    async with secure_channel(server[0].address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with continued_trace(f"00-{caller_trace}-{caller_span}-01"):
            await stub.ServerLive(pb.ServerLiveRequest(), metadata=bearer("reader-token"))
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.ModelReady(
                pb.ModelReadyRequest(name="ghost"), metadata=bearer("reader-token")
            )
    finished = span_exporter.get_finished_spans()
    spans = {(s.name, s.kind): s for s in finished}
    # The channel's call is a client span of the caller's trace; the server continues it.
    call = spans[(f"/{SERVICE}/ServerLive", SpanKind.CLIENT)]
    live = spans[(f"/{SERVICE}/ServerLive", SpanKind.SERVER)]
    assert call.context is not None
    assert live.context is not None
    assert format(live.context.trace_id, "032x") == caller_trace
    assert call.parent is not None
    assert format(call.parent.span_id, "016x") == caller_span
    assert live.parent is not None
    assert live.parent.span_id == call.context.span_id
    assert live.attributes is not None
    assert live.attributes["rpc.system"] == "grpc"
    assert live.attributes["rpc.service"] == SERVICE
    assert live.attributes["rpc.method"] == "ServerLive"
    assert live.attributes["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]
    assert live.status.is_ok
    missing = spans[(f"/{SERVICE}/ModelReady", SpanKind.SERVER)]
    ready_call = spans[(f"/{SERVICE}/ModelReady", SpanKind.CLIENT)]
    assert ready_call.parent is None  # no trace to continue: the call starts its own
    assert missing.context is not None
    assert ready_call.context is not None
    assert missing.context.trace_id == ready_call.context.trace_id != live.context.trace_id
    assert missing.attributes is not None
    assert missing.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert not missing.status.is_ok


async def test_stop_drains_in_flight_calls_and_refuses_new_ones(
    span_exporter: InMemorySpanExporter,
) -> None:
    servicer = ExampleServicer()
    binding = ServiceBinding(
        SERVICE, pb_grpc.add_GRPCInferenceServiceServicer_to_server, servicer, scopes=SCOPES
    )
    grpc_server = GrpcServer(
        grpc_settings(port=0, shutdown_grace_seconds=5),
        [binding],
        Authenticator(AuthSettings(allow_anonymous=True)),
    )
    await grpc_server.start()
    await grpc_server.set_serving(True)
    async with secure_channel(grpc_server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        in_flight = asyncio.ensure_future(stub.ServerMetadata(pb.ServerMetadataRequest()))
        await servicer.slow_call_started.wait()
        stopping = asyncio.create_task(grpc_server.stop())
        await asyncio.sleep(0.1)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.ServerLive(pb.ServerLiveRequest(), timeout=2)
        assert refused.value.code() is grpc.StatusCode.UNAVAILABLE
        assert (await in_flight).name == "slow but finished"
        await stopping


async def test_a_trace_started_in_a_grpc_call_continues_in_the_event_consumer(
    server: tuple[GrpcServer, ExampleServicer],
    span_exporter: InMemorySpanExporter,
    kafka_settings: KafkaSettings,
    publisher: EventPublisher,
    new_topic: NewTopicFactory,
    group_id: str,
) -> None:
    grpc_server, servicer = server
    servicer.publisher = publisher
    servicer.topic = TopicSpec(
        await new_topic("traced"), 1, Cleanup.DELETE, "application/protobuf", "model"
    )
    consumed = asyncio.Event()

    async def handle(envelope: Envelope) -> None:
        consumed.set()

    consumer = EventConsumer(
        kafka_settings,
        group_id=group_id,
        topics=[servicer.topic.name],
        handler=handle,
        dead_letters=publisher,
    )
    await consumer.start()
    span_exporter.clear()
    async with secure_channel(grpc_server.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        await stub.ModelInfer(
            pb.ModelInferRequest(model_name="iris", id="r1"), metadata=bearer("reader-token")
        )
    await asyncio.wait_for(consumed.wait(), 60)  # a fresh broker creates its group state first
    await consumer.stop()

    spans = span_exporter.get_finished_spans()
    [server_span] = [
        s for s in spans if s.kind is SpanKind.SERVER and s.name.endswith("ModelInfer")
    ]
    [producer_span] = [s for s in spans if s.kind is SpanKind.PRODUCER]
    [consumer_span] = [s for s in spans if s.kind is SpanKind.CONSUMER]
    trace_id = server_span.context.trace_id
    assert producer_span.context.trace_id == trace_id
    assert consumer_span.context.trace_id == trace_id
    assert consumer_span.parent is not None
    assert consumer_span.parent.span_id == producer_span.context.span_id
    assert not [s for s in spans if "Health" in s.name]


UNDECODABLE = b"\x0a\xff\xff"  # field 1, length-delimited, with a length that never ends


async def test_undecodable_requests_are_invalid_argument_naming_the_message_type(
    server: tuple[GrpcServer, ExampleServicer],
) -> None:
    async with secure_channel(server[0].address) as channel:
        live = channel.unary_unary(f"/{SERVICE}/ServerLive")
        with pytest.raises(grpc.aio.AioRpcError) as business:
            await live(UNDECODABLE, metadata=bearer("reader-token"))
        assert business.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "not a valid inference.ServerLiveRequest" in (business.value.details() or "")

        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        with pytest.raises(grpc.aio.AioRpcError) as health:
            await check(UNDECODABLE)
        assert health.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "grpc.health.v1.HealthCheckRequest" in (health.value.details() or "")

        watch = channel.unary_stream("/grpc.health.v1.Health/Watch")
        with pytest.raises(grpc.aio.AioRpcError) as watched:
            async for _ in watch(UNDECODABLE):
                pass
        assert watched.value.code() is grpc.StatusCode.INVALID_ARGUMENT

        valid = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
        info = channel.stream_stream(
            "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        call = info(iter([valid, UNDECODABLE]))
        assert (await call.read()).list_services_response  # the valid message is answered
        with pytest.raises(grpc.aio.AioRpcError) as reflected:
            await call.read()
        assert reflected.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "ServerReflectionRequest" in (reflected.value.details() or "")

        # The server goes on serving the same methods, streams included.
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(health_pb2.HealthCheckRequest())
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        watching = health.Watch(health_pb2.HealthCheckRequest())
        watched_status = await watching.read()
        assert watched_status.status == health_pb2.HealthCheckResponse.SERVING
        watching.cancel()  # else the server's stop waits out its grace period for the stream


async def test_error_messages_quoting_huge_input_reach_the_caller_truncated(
    server: tuple[GrpcServer, ExampleServicer],
) -> None:
    async with secure_channel(server[0].address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as not_found:
            await stub.ModelReady(
                pb.ModelReadyRequest(name="x" * 300_000), metadata=bearer("reader-token")
            )
    assert not_found.value.code() is grpc.StatusCode.NOT_FOUND
    details = not_found.value.details() or ""
    assert details.startswith("model 'xxx")
    assert details.endswith("(truncated)")
    assert len(details) <= 2048
