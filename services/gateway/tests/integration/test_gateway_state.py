"""Typed contents, version policies, readiness, NaN policy and status heartbeats."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import grpc
import numpy as np
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.structs import ConsumerRecord

from flywheel.gateway.v1 import events_pb2 as gateway_events
from flywheel_common.events import EventTypes, decode_event
from flywheel_common.healthcheck import is_serving
from flywheel_common.topics import DEPLOYMENTS, GATEWAY_STATUS
from flywheel_gateway.app import build as build_gateway
from flywheel_testing.kafka import client_options, read_topic
from flywheel_testing.models import IrisModels
from flywheel_testing.tls import grpc_settings, pki, secure_channel
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

from .conftest import Platform
from .test_serving import prediction_logs


def typed_request(model: str, rows: np.ndarray, version: str = "") -> pb.ModelInferRequest:
    tensor = pb.ModelInferRequest.InferInputTensor(
        name="features", datatype="FP32", shape=rows.shape
    )
    tensor.contents.fp32_contents.extend(rows.reshape(-1).tolist())
    return pb.ModelInferRequest(
        model_name=model, model_version=version, id="typed", inputs=[tensor]
    )


async def test_typed_contents_and_pinned_versions(
    platform: Platform, iris: IrisModels, model_name: str
) -> None:
    await platform.register(model_name, iris.classifier)
    await platform.register(model_name, iris.retrained)
    # v2 takes the traffic; v1 stays loaded for callers that pin it (SPECIFIC policy).
    from flywheel.deployer.v1 import events_pb2 as deployer_events
    from flywheel.deployer.v1 import types_pb2 as deployer_types

    state = deployer_events.DeploymentState(
        model=model_name,
        routes=[deployer_types.TrafficRoute(version=2, weight_percent=100)],
        generation=1,
        gateway_version_policy=deployer_types.GatewayVersionPolicy(
            kind=deployer_types.GATEWAY_VERSION_POLICY_KIND_SPECIFIC, versions=[1]
        ),
    )
    await platform.publisher.publish(DEPLOYMENTS, state, subject=model_name)
    platform.deployed.add(model_name)
    async with asyncio.timeout(30):
        while platform.gateway_follower.applied_generations.get(model_name) != 1:
            await asyncio.sleep(0.02)
    async with secure_channel(platform.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        rows = iris.features[:5]
        routed = await stub.ModelInfer(typed_request(model_name, rows))
        pinned = await stub.ModelInfer(typed_request(model_name, rows, version="1"))
        metadata = await stub.ModelMetadata(pb.ModelMetadataRequest(name=model_name))
    assert (routed.model_version, pinned.model_version, routed.id) == ("2", "1", "typed")
    labels = np.frombuffer(routed.raw_output_contents[0], np.int64)
    assert labels.tolist() == iris.labels[:5].tolist()
    assert sorted(metadata.versions) == ["1", "2"]


async def test_a_version_that_cannot_load_is_unavailable_not_an_error(
    platform: Platform, iris: IrisModels, model_name: str
) -> None:
    await platform.register(model_name, iris.classifier)
    await platform.deploy(model_name, {7: 100}, generation=1)  # the registry has no v7
    async with secure_channel(platform.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await stub.ModelInfer(typed_request(model_name, iris.features[:1]))
        ready = await stub.ModelReady(pb.ModelReadyRequest(name=model_name))
    assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "no routed version ready" in (failure.value.details() or "")
    assert not ready.ready


@pytest.mark.parametrize("own_platform", [{"non_finite_inputs": "flag"}], indirect=True)
async def test_nan_inputs_can_be_flagged_instead_of_rejected(
    own_platform: Platform, iris: IrisModels, model_name: str, kafka_bootstrap: str
) -> None:
    await own_platform.register(model_name, iris.classifier)
    await own_platform.deploy(model_name, {1: 100}, generation=1)
    rows = np.array([[np.nan, 1.0, 1.0, 1.0]], np.float32)
    async with secure_channel(own_platform.address) as channel:
        response = await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            typed_request(model_name, rows)
        )
    assert response.model_version == "1"
    [log] = await prediction_logs(kafka_bootstrap, model_name, at_least=1)
    assert log.nan_flagged


@pytest.mark.parametrize(
    "own_platform", [{"grpc": grpc_settings(port=0, max_message_bytes=4096)}], indirect=True
)
async def test_messages_over_the_size_limit_are_resource_exhausted(
    own_platform: Platform, iris: IrisModels, model_name: str
) -> None:
    await own_platform.register(model_name, iris.classifier)
    await own_platform.deploy(model_name, {1: 100}, generation=1)
    big = np.zeros((2000, 4), np.float32)  # 32 KB of floats against a 4 KB limit
    async with secure_channel(own_platform.address) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failure:
            await pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
                typed_request(model_name, big)
            )
    assert failure.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_status_heartbeats_report_ready_versions(
    platform: Platform, iris: IrisModels, model_name: str, kafka_bootstrap: str
) -> None:
    await platform.register(model_name, iris.classifier)
    await platform.deploy(model_name, {1: 100}, generation=3)
    types = EventTypes.flywheel()
    async with asyncio.timeout(30):
        while True:
            records = await read_topic(
                kafka_bootstrap, GATEWAY_STATUS.name, at_least=0, timeout_ms=60_000
            )
            statuses = [
                decode_event(r.headers, r.value, types).message
                for r in records
                if r.key == platform.settings.gateway_id.encode()
            ]
            latest = statuses[-1] if statuses else None
            if latest is not None and any(
                v.model == model_name and v.state == gateway_events.LOAD_STATE_READY
                for v in latest.versions
            ):
                break
            await asyncio.sleep(0.2)
    assert isinstance(latest, gateway_events.GatewayStatus)
    assert latest.ready
    assert latest.address == platform.address
    assert latest.applied_generations[model_name] == 3
    [version] = [v for v in latest.versions if v.model == model_name]
    assert version.execution_provider == "CPUExecutionProvider"
    assert version.artifact_sha256


async def test_a_record_it_cannot_apply_does_not_stop_the_gateway_following_deployments(
    platform: Platform, iris: IrisModels, model_name: str
) -> None:
    await platform.register(model_name, iris.classifier)
    await platform.register(model_name, iris.retrained)
    await platform.deploy(model_name, {1: 100}, generation=1)
    # A delete marker whose key is not UTF-8: no model can have that name.
    producer = AIOKafkaProducer(**client_options(platform.settings.kafka.bootstrap_servers))
    await producer.start()
    try:
        await producer.send_and_wait(DEPLOYMENTS.name, None, key=b"\xff\xfe")
    finally:
        await producer.stop()
    await platform.deploy(model_name, {2: 100}, generation=2)
    async with secure_channel(platform.address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        served = await stub.ModelInfer(typed_request(model_name, iris.features[:3]))
    assert served.model_version == "2"
    assert await is_serving(platform.address, pki().client_tls())
    assert not platform.gateway.failed.is_set()


async def test_a_gateway_that_stops_cleanly_deletes_its_status(
    platform: Platform, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """The status topic is compacted: without a tombstone, every replica that ever ran would
    stay listed (by the deployer and `flywheel status`) after it stopped."""
    gateway_id = f"gw-leaving-{uuid.uuid4().hex[:6]}"
    # A replica of its own, its own folder: the module gateway's prediction-log spool is that
    # gateway's alone (a second writer is refused at its start).
    settings = platform.settings.model_copy(
        update={
            "gateway_id": gateway_id,
            "grpc": grpc_settings(port=0),
            "heartbeat_seconds": 0.2,
            "data_dir": tmp_path,
        }
    )
    gateway = build_gateway(settings)
    await gateway.start()
    try:
        async with asyncio.timeout(30):
            while not await _own_status_records(kafka_bootstrap, gateway_id):
                await asyncio.sleep(0.2)
    finally:
        await gateway.stop()
    records = await _own_status_records(kafka_bootstrap, gateway_id)
    assert records[0].value is not None
    assert records[-1].value is None  # the newest record for its key: a delete marker


async def _own_status_records(
    kafka_bootstrap: str, gateway_id: str
) -> list[ConsumerRecord[bytes, bytes]]:
    records = await read_topic(kafka_bootstrap, GATEWAY_STATUS.name, at_least=0)
    return [r for r in records if r.key == gateway_id.encode()]
