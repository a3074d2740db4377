"""Calling any method of a running service with raw bytes, and what the services hold.

Calls go through a generic channel (no stubs): the suite reaches every method its
descriptors list, and can send bytes that no stub would serialize.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from flywheel.deployer.v1 import deployer_pb2
from flywheel.drift.v1 import drift_pb2
from flywheel.registry.v1 import registry_pb2
from flywheel.retrain.v1 import retrain_pb2
from inference import grpc_service_pb2

from .fleet import METADATA

CALL_TIMEOUT = 30.0
# Every service of every server, from the generated descriptors: a new RPC is fuzzed as
# soon as it is generated.
BUSINESS_SERVICES: dict[str, list[ServiceDescriptor]] = {
    "registry": list(registry_pb2.DESCRIPTOR.services_by_name.values()),
    "deployer": list(deployer_pb2.DESCRIPTOR.services_by_name.values()),
    "gateway": list(grpc_service_pb2.DESCRIPTOR.services_by_name.values()),
    "drift": list(drift_pb2.DESCRIPTOR.services_by_name.values()),
    "retrain": list(retrain_pb2.DESCRIPTOR.services_by_name.values()),
}
SHARED_SERVICES = [
    *health_pb2.DESCRIPTOR.services_by_name.values(),
    *reflection_pb2.DESCRIPTOR.services_by_name.values(),
]
FORBIDDEN = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.DATA_LOSS,
    }
)
"""Answers a service must never give to a method it lists, whatever the input."""


@dataclass(frozen=True)
class Rpc:
    server: str
    method: MethodDescriptor

    @property
    def path(self) -> str:
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def id(self) -> str:
        return f"{self.server}:{self.method.containing_service.name}.{self.method.name}"


def every_rpc() -> list[Rpc]:
    return [
        Rpc(server, method)
        for server, services in BUSINESS_SERVICES.items()
        for service in [*services, *SHARED_SERVICES]
        for method in service.methods
    ]


@dataclass(frozen=True)
class Outcome:
    code: grpc.StatusCode
    details: str
    response: bytes | None = None


def invoke(channel: grpc.Channel, rpc: Rpc, payload: bytes | Sequence[bytes]) -> Outcome:
    """One call with raw request bytes (a list of messages for a client stream). A server
    stream is read to its first message and then cancelled: by then the request has been
    checked, and some streams (health Watch) never end."""
    method = rpc.method
    try:
        if method.client_streaming:
            messages = [payload] if isinstance(payload, bytes) else list(payload)
            if method.server_streaming:
                stream = channel.stream_stream(rpc.path)(
                    iter(messages), metadata=METADATA, timeout=CALL_TIMEOUT
                )
                return _first(stream)
            response = channel.stream_unary(rpc.path)(
                iter(messages), metadata=METADATA, timeout=CALL_TIMEOUT
            )
            return Outcome(grpc.StatusCode.OK, "", response)
        assert isinstance(payload, bytes)
        if method.server_streaming:
            return _first(
                channel.unary_stream(rpc.path)(payload, metadata=METADATA, timeout=CALL_TIMEOUT)
            )
        response = channel.unary_unary(rpc.path)(payload, metadata=METADATA, timeout=CALL_TIMEOUT)
        return Outcome(grpc.StatusCode.OK, "", response)
    except grpc.RpcError as error:
        return Outcome(error.code(), error.details() or "")  # type: ignore[attr-defined]


def _first(stream: grpc.Future) -> Outcome:  # type: ignore[type-arg]
    first = next(iter(stream), None)  # type: ignore[call-overload]
    stream.cancel()
    return Outcome(grpc.StatusCode.OK, "", first)


Snapshot = Callable[[grpc.Channel, str], tuple[object, ...]]


def _unary(channel: grpc.Channel, path: str, request: Message, reply: type[Message]) -> Message:
    call = channel.unary_unary(
        path,
        request_serializer=type(request).SerializeToString,
        response_deserializer=reply.FromString,
    )
    result: Message = call(request, metadata=METADATA, timeout=CALL_TIMEOUT)
    return result


def _observed(read: Callable[[], tuple[object, ...]]) -> tuple[object, ...]:
    try:
        return read()
    except grpc.RpcError as error:
        return (error.code(),)  # type: ignore[attr-defined]


def _registry(channel: grpc.Channel, model: str) -> tuple[object, ...]:
    service = "/flywheel.registry.v1.RegistryService"

    def read() -> tuple[object, ...]:
        versions = _unary(
            channel,
            f"{service}/ListModelVersions",
            registry_pb2.ListModelVersionsRequest(
                model=model, include_archived=True, page_size=1000
            ),
            registry_pb2.ListModelVersionsResponse,
        )
        return tuple(
            version.SerializeToString(deterministic=True) for version in versions.model_versions
        )  # type: ignore[attr-defined]

    return _observed(read)


def _deployer(channel: grpc.Channel, model: str) -> tuple[object, ...]:
    service = "/flywheel.deployer.v1.DeployerService"

    def read() -> tuple[object, ...]:
        policy = _unary(
            channel,
            f"{service}/GetDeploymentPolicy",
            deployer_pb2.GetDeploymentPolicyRequest(model=model),
            deployer_pb2.GetDeploymentPolicyResponse,
        )
        rollouts = _unary(
            channel,
            f"{service}/ListRollouts",
            deployer_pb2.ListRolloutsRequest(model=model, page_size=200),
            deployer_pb2.ListRolloutsResponse,
        )
        ids = sorted(rollout.rollout_id for rollout in rollouts.rollouts)  # type: ignore[attr-defined]
        return (policy.SerializeToString(deterministic=True), *ids)

    return _observed(read)


def _drift(channel: grpc.Channel, model: str) -> tuple[object, ...]:
    def read() -> tuple[object, ...]:
        config = _unary(
            channel,
            "/flywheel.drift.v1.DriftService/GetMonitorConfig",
            drift_pb2.GetMonitorConfigRequest(model=model),
            drift_pb2.GetMonitorConfigResponse,
        )
        return (config.SerializeToString(deterministic=True),)

    return _observed(read)


def _retrain(channel: grpc.Channel, model: str) -> tuple[object, ...]:
    service = "/flywheel.retrain.v1.RetrainService"

    def read() -> tuple[object, ...]:
        policy = _unary(
            channel,
            f"{service}/GetRetrainPolicy",
            retrain_pb2.GetRetrainPolicyRequest(model=model),
            retrain_pb2.GetRetrainPolicyResponse,
        )
        runs = _unary(
            channel,
            f"{service}/ListRuns",
            retrain_pb2.ListRunsRequest(model=model, page_size=200),
            retrain_pb2.ListRunsResponse,
        )
        ids = sorted(run.run_id for run in runs.runs)  # type: ignore[attr-defined]
        return (policy.SerializeToString(deterministic=True), *ids)

    return _observed(read)


SNAPSHOTS: dict[str, Snapshot] = {
    "registry": _registry,
    "deployer": _deployer,
    "drift": _drift,
    "retrain": _retrain,
}
"""What a service holds for one model, read through its own API: a refused change must
leave it as it was."""

_MODEL_FIELDS = ("model", "name", "model_name")
_CARRIERS = ("metadata", "policy", "config")


def model_of(request: Message) -> str:
    """The model a request is about: its `model` field, or one of a policy, config or
    registration metadata it carries."""
    for carrier in ("", *_CARRIERS):
        message = request
        if carrier:
            if carrier not in request.DESCRIPTOR.fields_by_name or not request.HasField(carrier):
                continue
            message = getattr(request, carrier)
        for name in _MODEL_FIELDS:
            field = message.DESCRIPTOR.fields_by_name.get(name)
            if field is not None and field.type == field.TYPE_STRING and not field.is_repeated:
                value = getattr(message, name)
                if value:
                    return str(value)
    return ""
