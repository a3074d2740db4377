"""Every RPC of every service, attacked over real gRPC on running service processes.

Whatever arrives (random bytes, well-formed messages with extreme values, wrong tensors,
oversize messages) the answer is a precise status, never UNKNOWN or INTERNAL; the process
keeps serving; and a refused change leaves what the service holds as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from flywheel.common.v1 import types_pb2 as common_types
from flywheel.deployer.v1 import deployer_pb2
from flywheel.deployer.v1 import types_pb2 as deployer_types
from flywheel.drift.v1 import drift_pb2
from flywheel.drift.v1 import types_pb2 as drift_types
from flywheel.registry.v1 import registry_pb2
from flywheel.retrain.v1 import retrain_pb2
from flywheel.retrain.v1 import types_pb2 as retrain_types
from flywheel_common.channels import sync_channel
from flywheel_common.grpc_server import default_role
from flywheel_common.registration import registration
from flywheel_common.settings import Role
from flywheel_testing.models import IrisModels
from flywheel_testing.tls import pki
from inference import grpc_service_pb2 as inference_pb

from .calls import BUSINESS_SERVICES, FORBIDDEN, SNAPSHOTS, Rpc, every_rpc, invoke, model_of
from .conftest import fuzz_settings, record
from .fleet import MAX_MESSAGE_BYTES, FuzzFleet
from .strategies import infer_requests, messages, serialized, text

pytestmark = pytest.mark.integration

RPCS = every_rpc()
BUSINESS = frozenset(
    service.full_name for services in BUSINESS_SERVICES.values() for service in services
)


def _channel(fleet: FuzzFleet, server: str) -> grpc.Channel:
    return sync_channel(
        fleet.address(server), pki().client_tls(), [("grpc.max_send_message_length", -1)]
    )


def _still_serving(fleet: FuzzFleet, server: str) -> None:
    assert not fleet.exited(), f"a service process died: {fleet.exited()}"
    assert fleet.serving(server), f"{server} is not SERVING after the attack"


def _model_pool(fleet: FuzzFleet, server: str) -> st.SearchStrategy[str]:
    """The seeded model this server's fuzz works on, and junk names."""
    model = {
        "registry": fleet.registered_model,
        "gateway": fleet.served_model,
    }.get(server, fleet.deployed_model)
    return st.one_of(st.just(model), st.just(model), text())


def _requests(rpc: Rpc, fleet: FuzzFleet, iris: IrisModels) -> st.SearchStrategy[Any]:
    names = _model_pool(fleet, rpc.server)
    overrides = {
        "inference.ModelInferRequest": infer_requests(names, "features"),
    }
    request = messages(rpc.method.input_type, names, overrides=overrides)
    if not rpc.method.client_streaming:
        return request
    streams: st.SearchStrategy[Any] = st.lists(request, min_size=1, max_size=5)
    if rpc.method.name == "RegisterModelVersion":
        valid = registration(fleet.registered_model, iris.classifier, sample=iris.reference_sample)
        strays = st.tuples(request, st.integers(0, len(valid))).map(
            lambda t: [*valid[: t[1]], t[0], *valid[t[1] :]]
        )
        cut = st.integers(1, len(valid) - 1).map(lambda n: valid[:n])
        streams = st.one_of(streams, strays, cut)
    return streams


@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.id)
def test_random_bytes_get_a_precise_status(fleet: FuzzFleet, rpc: Rpc) -> None:
    channel = _channel(fleet, rpc.server)
    payloads: st.SearchStrategy[Any] = (
        st.lists(st.binary(max_size=256), min_size=1, max_size=4)
        if rpc.method.client_streaming
        else st.binary(max_size=512)
    )

    @fuzz_settings(rpc.server)
    @given(payload=payloads)
    def attack(payload: bytes | list[bytes]) -> None:
        outcome = invoke(channel, rpc, payload)
        record(rpc.server, outcome.code, outcome.details)
        assert outcome.code not in FORBIDDEN, (rpc.id, outcome)

    attack()
    channel.close()
    _still_serving(fleet, rpc.server)


@pytest.mark.parametrize("rpc", RPCS, ids=lambda rpc: rpc.id)
def test_extreme_messages_get_a_precise_status_and_leave_no_partial_state(
    fleet: FuzzFleet, rpc: Rpc, iris_models: IrisModels
) -> None:
    channel = _channel(fleet, rpc.server)
    changes = (
        rpc.method.containing_service.full_name in BUSINESS
        and default_role(rpc.method.name) is not Role.READER
    )
    snapshot = SNAPSHOTS.get(rpc.server) if changes else None

    @fuzz_settings(rpc.server)
    @given(request=_requests(rpc, fleet, iris_models))
    def attack(request: Message | Sequence[Message]) -> None:
        model = model_of(request if isinstance(request, Message) else request[0])
        before = snapshot(channel, model) if snapshot and model else None
        outcome = invoke(channel, rpc, serialized(request))
        record(rpc.server, outcome.code, outcome.details)
        assert outcome.code not in FORBIDDEN, (rpc.id, outcome)
        if snapshot and before is not None and outcome.code is not grpc.StatusCode.OK:
            assert snapshot(channel, model) == before, (
                f"{rpc.id} answered {outcome.code.name} ({outcome.details}) yet changed "
                f"what {rpc.server} holds for {model!r}"
            )

    attack()
    channel.close()
    _still_serving(fleet, rpc.server)


def _find(server: str, method: str) -> Rpc:
    return next(rpc for rpc in RPCS if rpc.server == server and rpc.method.name == method)


def _known_cases(fleet: FuzzFleet) -> list[tuple[str, str, Message, str]]:
    """The inputs an earlier fuzz run found answered UNKNOWN, INTERNAL or UNAVAILABLE:
    (server, method, request, a fragment of the INVALID_ARGUMENT message)."""
    served, deployed = fleet.served_model, fleet.deployed_model

    def infer(datatype: str, shape: list[int], **contents: Any) -> inference_pb.ModelInferRequest:
        request = inference_pb.ModelInferRequest(model_name=served)
        tensor = request.inputs.add(name="features", datatype=datatype, shape=shape)
        raw = contents.pop("raw", None)
        for field, values in contents.items():
            getattr(tensor.contents, field).extend(values)
        if raw is not None:
            request.raw_input_contents.append(raw)
        return request

    huge = Duration(seconds=2**62)
    return [
        ("gateway", "ModelInfer", infer("INT8", [1], int_contents=[1000]), "do not fit INT8"),
        ("gateway", "ModelInfer", infer("UINT8", [1], uint_contents=[300]), "do not fit UINT8"),
        ("gateway", "ModelInfer", infer("FP32", [1] * 65, fp32_contents=[1.0]), "65 dims"),
        ("gateway", "ModelInfer", infer("FP32", [0, 2**62], raw=b""), "more than"),
        (
            "registry",
            "SearchModelVersions",
            registry_pb2.SearchModelVersionsRequest(created_after=Timestamp(seconds=-(10**11))),
            "created_after.seconds is -100000000000",
        ),
        (
            "registry",
            "ListModels",
            registry_pb2.ListModelsRequest(name_prefix="x" * 300_000),
            "name_prefix 'xxxx",
        ),
        (
            "retrain",
            "TriggerRetrain",
            retrain_pb2.TriggerRetrainRequest(model="x" * 300_000),
            "...' is not a valid name",
        ),
        (
            "drift",
            "ListAlerts",
            drift_pb2.ListAlertsRequest(
                time_range=common_types.TimeRange(start=Timestamp(nanos=2_147_483_647))
            ),
            "time_range.start.nanos is 2147483647",
        ),
        (
            "drift",
            "SetMonitorConfig",
            drift_pb2.SetMonitorConfigRequest(
                config=drift_types.MonitorConfig(
                    model=deployed,
                    window=drift_types.WindowSpec(
                        kind=drift_types.WINDOW_KIND_TIME, size_duration=huge
                    ),
                )
            ),
            "window.size_duration.seconds is 4611686018427387904",
        ),
        (
            "retrain",
            "SetRetrainPolicy",
            retrain_pb2.SetRetrainPolicyRequest(
                policy=retrain_types.RetrainPolicy(model=deployed, cooldown=huge)
            ),
            "cooldown.seconds is 4611686018427387904",
        ),
        (
            "deployer",
            "SetDeploymentPolicy",
            deployer_pb2.SetDeploymentPolicyRequest(
                policy=deployer_types.DeploymentPolicy(
                    model=deployed, gateway_ready_timeout=Duration(nanos=2_147_483_647)
                )
            ),
            "gateway_ready_timeout.nanos is 2147483647",
        ),
        (
            "deployer",
            "SetDeploymentPolicy",
            deployer_pb2.SetDeploymentPolicyRequest(
                policy=deployer_types.DeploymentPolicy(
                    model=deployed, updated_at=Timestamp(nanos=-(2**31))
                )
            ),
            "updated_at.nanos is -2147483648",
        ),
        (
            "drift",
            "SetMonitorConfig",
            drift_pb2.SetMonitorConfigRequest(
                config=drift_types.MonitorConfig(model=deployed, correction=-(2**31))
            ),
            "correction -2147483648 is not a MultipleTestingCorrection",
        ),
        (
            "drift",
            "SetMonitorConfig",
            drift_pb2.SetMonitorConfigRequest(
                config=drift_types.MonitorConfig(
                    model=deployed,
                    window=drift_types.WindowSpec(size_duration=Duration(nanos=-(2**31))),
                )
            ),
            "window.size_duration.nanos is -2147483648",
        ),
        (
            "drift",
            "SetMonitorConfig",
            drift_pb2.SetMonitorConfigRequest(config=drift_types.MonitorConfig(model="*")),
            "config.model '*' is not a valid name",
        ),
        (
            "retrain",
            "TriggerRetrain",
            retrain_pb2.TriggerRetrainRequest(model="../../../etc/passwd"),
            "model '../../../etc/passwd' is not a valid name",
        ),
        (
            "deployer",
            "ListRollouts",
            deployer_pb2.ListRolloutsRequest(page_token="99999999999999999999"),
            "page_token is not one this server issued",
        ),
        *(
            (
                "deployer",
                method,
                request,
                f"model {name!r} is not a valid name",
            )
            for name in ("-1", "*")
            for method, request in (
                ("StartRollout", deployer_pb2.StartRolloutRequest(model=name, version=1)),
                ("Rollback", deployer_pb2.RollbackRequest(model=name, to_version=1)),
            )
        ),
    ]


def test_inputs_that_once_failed_the_services_are_invalid_arguments(fleet: FuzzFleet) -> None:
    for server, method, request, fragment in _known_cases(fleet):
        channel = _channel(fleet, server)
        before = None
        snapshot = SNAPSHOTS.get(server)
        model = model_of(request)
        if snapshot and model:
            before = snapshot(channel, model)
        outcome = invoke(channel, _find(server, method), request.SerializeToString())
        assert outcome.code is grpc.StatusCode.INVALID_ARGUMENT, (server, method, outcome)
        assert fragment in outcome.details, (server, method, outcome.details)
        if snapshot and model:
            assert snapshot(channel, model) == before
        channel.close()
    for server in BUSINESS_SERVICES:
        _still_serving(fleet, server)


@pytest.mark.parametrize("server", sorted(BUSINESS_SERVICES))
def test_oversize_messages_are_resource_exhausted(fleet: FuzzFleet, server: str) -> None:
    channel = _channel(fleet, server)
    oversize = b"\x0a" + b"\xff\xff\xff\x7f" + b"\x00" * (MAX_MESSAGE_BYTES + 1024)
    for rpc in [rpc for rpc in RPCS if rpc.server == server][:3]:
        payload: bytes | list[bytes] = [oversize] if rpc.method.client_streaming else oversize
        outcome = invoke(channel, rpc, payload)
        record(server, outcome.code, outcome.details)
        assert outcome.code is grpc.StatusCode.RESOURCE_EXHAUSTED, (rpc.id, outcome)
    channel.close()
    _still_serving(fleet, server)
