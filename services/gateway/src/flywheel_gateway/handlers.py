"""The gateway's use cases: route a request, validate it, run it, log it; follow deployments."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

import numpy as np
from opentelemetry import metrics, trace

from flywheel.common.v1 import types_pb2 as common
from flywheel_common.errors import FlywheelError, InvalidArgument, NotFound, Unavailable
from flywheel_common.grpc_server import status_of
from flywheel_common.signatures import TensorSpec
from flywheel_gateway import log_frames
from flywheel_gateway.models import LoadedVersion, ModelManager
from flywheel_gateway.predictions import PredictionLogger
from flywheel_gateway.routing import Role, Route, RoutingTable
from flywheel_gateway.tensors import (
    NonFinitePolicy,
    RequestTensor,
    check_against,
    datatype_of,
    raw_of,
    to_array,
)

log = logging.getLogger(__name__)
_meter = metrics.get_meter(__name__)
# One instrument per request: its count series is the request rate (OTel records cost
# microseconds each, on the serving path).
_latency = _meter.create_histogram(
    "flywheel.gateway.request.duration",
    unit="ms",
    description="Inference requests and their latency, by model, version, role and status",
)

_ROLES = {
    Role.STABLE: common.TRAFFIC_ROLE_STABLE,
    Role.CANARY: common.TRAFFIC_ROLE_CANARY,
    Role.ARM: common.TRAFFIC_ROLE_ARM,
    Role.SHADOW: common.TRAFFIC_ROLE_SHADOW,
    Role.PINNED: common.TRAFFIC_ROLE_PINNED,
}


@dataclass(frozen=True)
class InferRequest:
    model: str
    version: str
    request_id: str
    inputs: list[RequestTensor]
    requested_outputs: list[str] = field(default_factory=list)
    parameters: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class OutputTensor:
    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes


@dataclass(frozen=True)
class InferResult:
    model: str
    version: int
    request_id: str
    outputs: list[OutputTensor]


@dataclass(frozen=True)
class ModelDescription:
    """What ModelMetadata answers: the model, its ready versions, the version's signature."""

    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    execution_provider: str
    """The onnxruntime provider the version's session runs on."""


PLATFORM = "onnxruntime_onnx"
SERVER_NAME = "flywheel-gateway"
SERVER_VERSION = "0.1.0"


@dataclass(frozen=True)
class InferenceSettings:
    max_batch_size: int = 64
    non_finite: NonFinitePolicy = NonFinitePolicy.REJECT
    gateway_id: str = ""


class Inference:
    """Serves ModelInfer: route, check, batch and run, log, mirror to the shadow."""

    def __init__(
        self,
        models: ModelManager,
        routes: dict[str, RoutingTable],
        logger: PredictionLogger | None,
        settings: InferenceSettings,
    ) -> None:
        self._models = models
        self._routes = routes
        self._logger = logger
        self._settings = settings
        self._shadow_tasks: set[asyncio.Task[None]] = set()

    def table(self, model: str) -> RoutingTable:
        table = self._routes.get(model)
        if table is None or not table.serving:
            raise NotFound(f"model {model!r} is not deployed on this gateway")
        return table

    def serving_version(self, model: str, version: str) -> int:
        """The version a request names, or the one that takes most of the traffic."""
        if version:
            return _parse_version(version)
        table = self.table(model)
        ready = self._models.ready_set(model)
        routed = [r for r in table.routes if r.weight > 0]
        candidates = [r for r in routed if r.version in ready]
        if not candidates:
            raise self._models.not_ready(model, [r.version for r in routed])
        return max(candidates, key=lambda r: r.weight).version

    def is_model_ready(self, model: str, version: str) -> bool:
        """Whether the version named (or the one taking most traffic) answers now."""
        try:
            number = self.serving_version(model, version)
        except Unavailable:
            return False
        return self._models.is_ready(model, number)

    async def describe(self, model: str, version: str) -> ModelDescription:
        number = self.serving_version(model, version)
        async with self._models.use(model, number) as loaded:
            return ModelDescription(
                name=model,
                versions=[str(v) for v in self._models.ready_versions(model)],
                platform=PLATFORM,
                inputs=list(loaded.signature.inputs),
                outputs=list(loaded.signature.outputs),
                execution_provider=loaded.provider,
            )

    def _route(self, request: InferRequest) -> tuple[Route, RoutingTable | None]:
        if request.version:
            return Route(_parse_version(request.version), 100, Role.PINNED), self._routes.get(
                request.model
            )
        table = self.table(request.model)
        key = request.parameters.get(table.sticky_key) if table.sticky_key else None
        ready = self._models.ready_set(request.model)
        try:
            route = table.pick(str(key) if key is not None else None, random.random(), ready)
        except LookupError:
            routed = [r.version for r in table.routes if r.weight > 0]
            raise self._models.not_ready(request.model, routed) from None
        return route, table

    async def infer(self, request: InferRequest) -> InferResult:
        started = time.perf_counter()
        route, table = self._route(request)
        arrays: dict[str, np.ndarray] = {}
        try:
            arrays = _decode(request.inputs)
            async with self._models.use(request.model, route.version) as loaded:
                flagged = check_against(
                    arrays,
                    {t.name: t.datatype for t in request.inputs},
                    loaded.signature,
                    self._settings.max_batch_size,
                    self._settings.non_finite,
                )
                outputs = await self._models.infer(loaded, arrays)
                result = _select(request, loaded, outputs)
        except FlywheelError as error:
            await self._log(request, route, arrays, {}, started, error=error)
            raise
        await self._log(request, route, arrays, outputs, started, flagged=flagged)
        if (
            table is not None
            and route.role is not Role.PINNED
            and table.mirrors(request.request_id, random.random())
        ):
            task = asyncio.create_task(self._shadow(request, table.shadow_version, arrays))
            self._shadow_tasks.add(task)
            task.add_done_callback(self._shadow_tasks.discard)
        return result

    async def _shadow(
        self, request: InferRequest, version: int, arrays: dict[str, np.ndarray]
    ) -> None:
        """A copy of the request for the shadow version: logged, never returned."""
        started = time.perf_counter()
        route = Route(version, 0, Role.SHADOW)
        try:
            async with self._models.use(request.model, version) as loaded:
                outputs = await self._models.infer(loaded, arrays)
        except FlywheelError as error:
            await self._log(request, route, arrays, {}, started, error=error)
            return
        await self._log(request, route, arrays, outputs, started)

    async def _log(
        self,
        request: InferRequest,
        route: Route,
        inputs: dict[str, np.ndarray],
        outputs: dict[str, np.ndarray],
        started: float,
        error: FlywheelError | None = None,
        flagged: bool = False,
    ) -> None:
        """Count the request in the metrics, and log the prediction when logging is on:
        returns once the log is in the spool, so the answer comes after it."""
        elapsed = time.perf_counter() - started
        labels = {
            "model": request.model,
            "version": str(route.version),
            "role": route.role.value,
            "status": "ok" if error is None else type(error).__name__,
        }
        _latency.record(elapsed * 1000.0, labels)
        logger = self._logger
        if logger is None or not logger.sampled():
            return
        span = trace.get_current_span().get_span_context()

        def frame() -> bytes:
            return log_frames.encode(
                request_id=request.request_id,
                model=request.model,
                version=route.version,
                role=_ROLES[route.role],
                inputs=inputs,
                outputs=outputs,
                latency=elapsed,
                received_at=time.time() - elapsed,
                trace_id=span.trace_id if span.is_valid else 0,
                span_id=span.span_id,
                trace_flags=span.trace_flags,
                arm=route.arm,
                shadow=route.role is Role.SHADOW,
                status_code=0 if error is None else _status_number(error),
                status_message="" if error is None else error.message,
                nan_flagged=flagged,
                sample_rate=logger.sample_rate,
                gateway_id=self._settings.gateway_id,
            )

        on_disk = logger.log(frame)
        if on_disk is not None:
            await on_disk


def _parse_version(version: str) -> int:
    try:
        number = int(version)
    except ValueError:
        raise InvalidArgument(f"model_version must be a version number, not {version!r}") from None
    if number < 1:
        raise InvalidArgument(f"model_version must be 1 or more, not {number}")
    return number


def _decode(inputs: list[RequestTensor]) -> dict[str, np.ndarray]:
    arrays: dict[str, np.ndarray] = {}
    for tensor in inputs:
        if tensor.name in arrays:
            raise InvalidArgument(f"input {tensor.name!r} appears twice")
        arrays[tensor.name] = to_array(tensor)
    return arrays


def _select(
    request: InferRequest, loaded: LoadedVersion, outputs: dict[str, np.ndarray]
) -> InferResult:
    names = request.requested_outputs or [spec.name for spec in loaded.signature.outputs]
    unknown = [name for name in names if name not in outputs]
    if unknown:
        raise InvalidArgument(
            f"unknown output(s) {', '.join(unknown)}; the model produces "
            + ", ".join(spec.name for spec in loaded.signature.outputs)
        )
    return InferResult(
        model=request.model,
        version=loaded.version,
        request_id=request.request_id,
        outputs=[
            OutputTensor(
                name, datatype_of(outputs[name]), tuple(outputs[name].shape), raw_of(outputs[name])
            )
            for name in names
        ],
    )


def _status_number(error: FlywheelError) -> int:
    return int(status_of(error).value[0])
