"""A small client for apps: predictions from the gateway (KServe V2 over gRPC), and the
ground truth that later tells the platform whether they were right (CloudEvents on
`flywheel.ground-truth`, keyed by request id, as data platforms send them).

    client = Client.from_environment()
    answer = client.infer("breast-cancer", rows, request_id="r-1")
    client.send_ground_truth("breast-cancer", {"r-1": 1})
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np

from flywheel.drift.v1.ground_truth_pb2 import GroundTruth
from flywheel_common.channels import sync_channel
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import ClientTlsSettings, KafkaSettings
from flywheel_common.signatures import NUMPY_DTYPES
from flywheel_common.timestamps import epoch
from flywheel_common.topics import GROUND_TRUTH
from flywheel_sdk.conversion import FEATURES, LABEL, PROBABILITIES
from inference import grpc_service_pb2 as pb
from inference import grpc_service_pb2_grpc as pb_grpc

SOURCE = "flywheel-sdk"


@dataclass(frozen=True)
class Prediction:
    """One answer of the gateway: the version that gave it and its outputs by name."""

    model: str
    version: int
    request_id: str
    outputs: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def label(self) -> np.ndarray:
        return self.outputs[LABEL]

    @property
    def probabilities(self) -> np.ndarray:
        return self.outputs[PROBABILITIES]


class Client:
    def __init__(
        self,
        gateway: str,
        tls: ClientTlsSettings,
        token: str = "",
        kafka: KafkaSettings | None = None,
    ) -> None:
        """`gateway`: host:port of the gateway's gRPC API; `kafka`: the brokers ground
        truth goes to (needed only by `send_ground_truth`)."""
        self._channel = sync_channel(gateway, tls, token=token)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._kafka = kafka

    @classmethod
    def from_environment(cls) -> Client:
        """The CLI's settings: FLYWHEEL_CLI_GATEWAY, _TOKEN, _TLS__*, _KAFKA and
        _KAFKA_AUTH__*, or `make run`'s .run/cli.env."""
        from flywheel_cli.connection import Addresses  # the CLI's settings, read when asked

        addresses = Addresses()
        return cls(addresses.gateway, addresses.tls, addresses.token, addresses.kafka_settings())

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: Any) -> None:
        self.close()

    def infer(
        self,
        model: str,
        features: np.ndarray,
        *,
        request_id: str = "",
        version: str = "",
        routing_key: str = "",
        timeout: float = 10.0,
    ) -> Prediction:
        """The model's answer for `features` ([rows, features], sent as FP32). A
        `routing_key` keeps a caller on one arm of an A/B test or bandit."""
        rows = np.ascontiguousarray(features, dtype=np.float32)
        request = pb.ModelInferRequest(
            model_name=model,
            model_version=version,
            id=request_id,
            inputs=[
                pb.ModelInferRequest.InferInputTensor(
                    name=FEATURES, datatype="FP32", shape=list(rows.shape)
                )
            ],
            raw_input_contents=[rows.tobytes()],
        )
        if routing_key:
            request.parameters["flywheel-routing-key"].string_param = routing_key
        try:
            response = self._stub.ModelInfer(request, timeout=timeout)
        except grpc.RpcError as error:
            raise InferenceFailed(f"{error.code().name}: {error.details()}") from None
        outputs = {
            tensor.name: np.frombuffer(raw, dtype=NUMPY_DTYPES[tensor.datatype]).reshape(
                tuple(tensor.shape)
            )
            for tensor, raw in zip(response.outputs, response.raw_output_contents, strict=True)
        }
        return Prediction(model, int(response.model_version), response.id, outputs)

    def send_ground_truth(self, model: str, labels: Mapping[str, int | float | str]) -> None:
        """The true outcome of each request id, one label per record; returns once Kafka
        has every one."""
        asyncio.run(self.send_ground_truth_async(model, labels))

    async def send_ground_truth_async(
        self, model: str, labels: Mapping[str, int | float | str]
    ) -> None:
        if self._kafka is None:
            raise ValueError("this client has no Kafka settings: pass kafka= to send ground truth")
        publisher = EventPublisher(self._kafka, SOURCE)
        await publisher.start()
        try:
            now = epoch(time.time())
            await publisher.send(
                [
                    GROUND_TRUTH.record(
                        _truth(model, request_id, label, now),
                        source=SOURCE,
                        subject=model,
                        key=request_id,
                    )
                    for request_id, label in labels.items()
                ]
            )
        finally:
            await publisher.stop()


class InferenceFailed(RuntimeError):
    """The gateway refused or failed a request; the message is its status and details."""


def _truth(model: str, request_id: str, label: int | float | str, now: Any) -> GroundTruth:
    truth = GroundTruth(request_id=request_id, model=model, observed_at=now, source=SOURCE)
    if isinstance(label, bool | int | np.integer):
        truth.int64_label = int(label)
    elif isinstance(label, float | np.floating):
        truth.double_label = float(label)
    else:
        truth.string_label = str(label)
    return truth
