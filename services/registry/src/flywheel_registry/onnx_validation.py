"""ONNX artifact validation: the checker, no external data, bounded size, a real onnxruntime
load, signature."""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain

import onnx
import onnxruntime
from google.protobuf.message import DecodeError

from flywheel_common.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted
from flywheel_common.signatures import DYNAMIC, ONNXRUNTIME_DATATYPES, Signature, TensorSpec
from flywheel_registry.domain import ValidatedModel


def _sparse(tensors: Iterable[onnx.SparseTensorProto]) -> Iterator[onnx.TensorProto]:
    for sparse in tensors:
        yield sparse.values
        yield sparse.indices


def _node_tensors(nodes: Iterable[onnx.NodeProto]) -> Iterator[onnx.TensorProto]:
    """Every tensor in the nodes' attributes, dense or sparse, and in their subgraphs."""
    for node in nodes:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield from _sparse([attribute.sparse_tensor])
            yield from _sparse(attribute.sparse_tensors)
            if attribute.HasField("g"):
                yield from _tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _tensors(subgraph)


def _tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    """Every tensor a graph stores, including those in subgraphs and node attributes."""
    yield from graph.initializer
    yield from _sparse(graph.sparse_initializer)
    yield from _node_tensors(graph.node)


def _reject_external_data(model: onnx.ModelProto) -> None:
    """Weights must live inside the artifact: an external path can read any file the
    server can (`../../etc/passwd`), a known attack on model registries. onnxruntime
    resolves a relative one against the server's working directory, so none is safe."""
    in_functions = (_node_tensors(function.node) for function in model.functions)
    for tensor in chain(_tensors(model.graph), *in_functions):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
            location = next((e.value for e in tensor.external_data if e.key == "location"), "?")
            raise InvalidArgument(
                f"tensor {tensor.name!r} refers to external data file {location!r}; the "
                "registry accepts self-contained models only (save without external data)"
            )


@dataclass(frozen=True)
class GraphLimits:
    """How big a model may be inside, beyond its size in bytes."""

    max_nodes: int = 200_000
    """Nodes of the graph, its subgraphs and its functions."""
    max_tensor_elements: int = 2**28
    """Elements of any tensor whose shape ONNX shape inference knows without the inputs.
    A file of a few hundred bytes can build a constant of 10**10 elements at run time
    (ConstantOfShape, Expand, Tile): a decompression bomb for whatever serves it."""


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                yield from _graphs(attribute.g)
            for subgraph in attribute.graphs:
                yield from _graphs(subgraph)


def _node_count(model: onnx.ModelProto) -> int:
    in_graphs = sum(len(graph.node) for graph in _graphs(model.graph))
    return in_graphs + sum(len(function.node) for function in model.functions)


def _reject_too_many_nodes(model: onnx.ModelProto, limits: GraphLimits) -> None:
    nodes = _node_count(model)
    if nodes > limits.max_nodes:
        raise ResourceExhausted(
            f"the model has {nodes} nodes, more than the limit of {limits.max_nodes} "
            "(FLYWHEEL_REGISTRY_MAX_GRAPH_NODES)"
        )


def _reject_huge_tensors(model: onnx.ModelProto, limits: GraphLimits) -> None:
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True)
    except (onnx.shape_inference.InferenceError, ValueError, RuntimeError) as exc:
        raise InvalidArgument(f"ONNX shape inference rejects the model: {exc}") from exc
    for value in chain(inferred.graph.value_info, inferred.graph.output):
        dims = value.type.tensor_type.shape.dim
        if not dims or not all(dim.HasField("dim_value") for dim in dims):
            continue
        elements = math.prod(dim.dim_value for dim in dims)
        if elements > limits.max_tensor_elements:
            raise InvalidArgument(
                f"tensor {value.name!r} has shape {[dim.dim_value for dim in dims]}: "
                f"{elements} elements, more than the limit of {limits.max_tensor_elements} "
                "(FLYWHEEL_REGISTRY_MAX_TENSOR_ELEMENTS)"
            )


def _spec(value: onnxruntime.NodeArg, role: str) -> TensorSpec:
    datatype = ONNXRUNTIME_DATATYPES.get(value.type)
    if datatype is None:
        raise InvalidArgument(
            f"{role} {value.name!r} has type {value.type}; the gateway serves tensors only "
            "(for scikit-learn classifiers convert with zipmap disabled)"
        )
    shape = tuple(dim if isinstance(dim, int) and dim >= 0 else DYNAMIC for dim in value.shape)
    return TensorSpec(value.name, datatype, shape)


def validate_onnx(data: bytes, limits: GraphLimits = GraphLimits()) -> ValidatedModel:
    """Parse, check and load a model; raises InvalidArgument saying what is wrong."""
    if not data:
        raise InvalidArgument("the artifact is empty; send the ONNX file as artifact_chunk")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise InvalidArgument(
            f"the artifact is not an ONNX model (or is truncated): {exc}"
        ) from exc
    if not model.graph.node and not model.graph.output:
        raise InvalidArgument("the artifact is not an ONNX model: it has no graph")
    _reject_external_data(model)
    _reject_too_many_nodes(model, limits)
    try:
        onnx.checker.check_model(model)
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        raise InvalidArgument(f"the ONNX checker rejects the model: {exc}") from exc
    _reject_huge_tensors(model, limits)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    try:
        session = onnxruntime.InferenceSession(
            data, sess_options=options, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own unrelated exception types
        raise InvalidArgument(f"onnxruntime cannot load the model: {exc}") from exc
    signature = Signature(
        inputs=tuple(_spec(value, "input") for value in session.get_inputs()),
        outputs=tuple(_spec(value, "output") for value in session.get_outputs()),
    )
    default_opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return ValidatedModel(
        signature=signature,
        ir_version=int(model.ir_version),
        opset_version=int(default_opset),
        producer_name=model.producer_name,
    )


class OnnxValidator:
    """Runs validation off the event loop, a bounded number at a time, within a time limit.

    A thread cannot be interrupted, so at the limit the registration fails while the check
    finishes in the background; the bounded pool keeps such stragglers from piling up.
    """

    def __init__(
        self, timeout_seconds: float, max_concurrent: int = 2, limits: GraphLimits = GraphLimits()
    ) -> None:
        self._timeout = timeout_seconds
        self._validate = functools.partial(validate_onnx, limits=limits)
        self._executor = ThreadPoolExecutor(max_concurrent, thread_name_prefix="onnx-validate")

    async def validate(self, data: bytes) -> ValidatedModel:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(
                loop.run_in_executor(self._executor, self._validate, data), self._timeout
            )
        except TimeoutError:
            raise DeadlineExceeded(
                f"validating the model took longer than {self._timeout:.0f}s; "
                "check the model or raise FLYWHEEL_REGISTRY_VALIDATION_TIMEOUT_SECONDS"
            ) from None

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
