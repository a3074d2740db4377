"""Logged predictions and ground truth: packing logs into records, and reading them back as
input rows, predicted classes and labels.

The gateway packs the logs of one model into `PredictionLogBatch` records; the drift
detector and the retrain trigger read the same events. One reading of them keeps a predicted
class and its ground truth comparable everywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np
from google.protobuf.message import Message

from flywheel.common.v1.types_pb2 import Tensor
from flywheel.drift.v1.ground_truth_pb2 import GroundTruth
from flywheel.gateway.v1.events_pb2 import PredictionLog, PredictionLogBatch
from flywheel_common.events import OutgoingRecord, event_record, event_type
from flywheel_common.signatures import NUMPY_DTYPES
from flywheel_common.topics import PREDICTIONS

M = TypeVar("M", PredictionLog, GroundTruth)

LABEL_OUTPUT = "label"
PROBABILITIES_OUTPUT = "probabilities"


MAX_RECORD_BYTES = 512 * 1024
"""Packing stops before a record's logs pass this size: Kafka refuses records over its
`message.max.bytes` (1 MiB by default), and a refused record would never be delivered."""


_LOGS_FIELD_TAG = bytes([PredictionLogBatch.LOGS_FIELD_NUMBER << 3 | 2])
"""`PredictionLogBatch.logs`: its field number, length-delimited."""


_SMALL = [bytes((value,)) for value in range(0x80)]


def varint(value: int) -> bytes:
    """An integer as a protobuf base-128 varint (a negative one: its 64-bit two's
    complement, as protobuf writes int32 and int64). One or two bytes, the common lengths,
    without a loop: the gateway writes several per prediction log."""
    if value < 0:
        value &= (1 << 64) - 1
    if value < 0x80:
        return _SMALL[value]
    if value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    encoded = bytearray()
    while value > 0x7F:
        encoded.append(value & 0x7F | 0x80)
        value >>= 7
    encoded.append(value)
    return bytes(encoded)


def pack(
    logs: Sequence[PredictionLog],
    *,
    source: str,
    per_record: int = 200,
    max_bytes: int = MAX_RECORD_BYTES,
) -> list[tuple[OutgoingRecord, int]]:
    """Prediction logs as `flywheel.predictions` records: see `pack_encoded`."""
    return pack_encoded(
        [(log.model, log.SerializeToString()) for log in logs],
        source=source,
        per_record=per_record,
        max_bytes=max_bytes,
    )


def pack_encoded(
    logs: Sequence[tuple[str, bytes]],
    *,
    source: str,
    per_record: int = 200,
    max_bytes: int = MAX_RECORD_BYTES,
    event_id: Callable[[str, int], str] | None = None,
) -> list[tuple[OutgoingRecord, int]]:
    """Prediction logs, each its model and its `PredictionLog` encoding, as
    `flywheel.predictions` records: one `PredictionLogBatch` per model, of at most
    `per_record` logs and, unless one log alone is larger, `max_bytes`; in the order given.
    Each record comes with the number of logs it carries. `event_id(model, n)` names the
    n-th record of a model's logs (a random id by default).

    A batch's wire format is its logs' own, each after the field's tag and its length: the
    batch is joined from those bytes (a batch message would copy every log before
    serializing it again)."""
    by_model: dict[str, list[bytes]] = {}
    for model, encoded in logs:
        by_model.setdefault(model, []).append(_LOGS_FIELD_TAG + varint(len(encoded)) + encoded)
    ce_type = event_type(PredictionLogBatch)
    packed = []
    for model, fields in by_model.items():
        for number, part in enumerate(_runs(fields, per_record, max_bytes)):
            record = event_record(
                PREDICTIONS.name,
                b"".join(part),
                ce_type,
                source=source,
                subject=model,
                event_id=event_id(model, number) if event_id else None,
            )
            packed.append((record, len(part)))
    return packed


def _runs(fields: list[bytes], per_record: int, max_bytes: int) -> list[list[bytes]]:
    """`fields` in order, cut into runs of at most `per_record` and `max_bytes` (a larger
    one alone)."""
    runs: list[list[bytes]] = []
    run: list[bytes] = []
    size = 0
    for field in fields:
        if run and (len(run) == per_record or size + len(field) > max_bytes):
            runs.append(run)
            run, size = [], 0
        run.append(field)
        size += len(field)
    if run:
        runs.append(run)
    return runs


def pack_per_model(
    items: Sequence[M],
    record: Callable[[list[M], str], OutgoingRecord],
    *,
    per_record: int,
    max_bytes: int = MAX_RECORD_BYTES,
) -> list[tuple[OutgoingRecord, int]]:
    """Messages that name their `model` (ground truth labels) as records made by
    `record(part, model)`: per model, at most `per_record` of them and, unless one alone is
    larger, `max_bytes`; in the order given. Each record comes with how many it carries."""
    by_model: dict[str, list[M]] = {}
    for item in items:
        by_model.setdefault(item.model, []).append(item)
    packed = []
    for model, mine in by_model.items():
        for start in range(0, len(mine), per_record):
            chunk = mine[start : start + per_record]
            whole = record(chunk, model)
            if len(whole.value) <= max_bytes:
                packed.append((whole, len(chunk)))
            else:  # rare: only then is each message's size worth measuring
                for part in _by_size(chunk, max_bytes):
                    packed.append((record(part, model), len(part)))
    return packed


def _by_size(items: list[M], max_bytes: int) -> list[list[M]]:
    """`items` in order, cut into runs of at most `max_bytes` (a larger one alone)."""
    parts: list[list[M]] = []
    part: list[M] = []
    size = 0
    for item in items:
        item_bytes = item.ByteSize() + 5  # the field's tag and length in the batch
        if part and size + item_bytes > max_bytes:
            parts.append(part)
            part, size = [], 0
        part.append(item)
        size += item_bytes
    if part:
        parts.append(part)
    return parts


def unpack(message: Message) -> Sequence[PredictionLog]:
    """The prediction logs an event on `flywheel.predictions` carries: a batch, or one log."""
    if isinstance(message, PredictionLogBatch):
        return message.logs
    if isinstance(message, PredictionLog):
        return (message,)
    raise ValueError(
        f"{message.DESCRIPTOR.full_name} carries no prediction logs; expected "
        f"{PredictionLogBatch.DESCRIPTOR.full_name} or {PredictionLog.DESCRIPTOR.full_name}"
    )


def category_label(value: object) -> str:
    """The text of a category, predicted class or label: integers without a decimal point,
    so that 1, 1.0 and "1" from a model, a reference sample and ground truth all match."""
    if isinstance(value, str):
        return value
    number = float(value)  # type: ignore[arg-type]
    return str(int(number)) if number.is_integer() else repr(number)


def tensor_array(tensor: Tensor) -> np.ndarray:
    """A numeric tensor's values in its own shape; ValueError for BYTES or unknown types."""
    dtype = NUMPY_DTYPES.get(tensor.datatype)
    if dtype is None or tensor.datatype == "BYTES":
        raise ValueError(f"tensor {tensor.name!r}: {tensor.datatype} is not a numeric datatype")
    return np.frombuffer(tensor.data, dtype=dtype).reshape(tuple(tensor.shape))


def input_rows(log: PredictionLog, input_name: str = "") -> np.ndarray:
    """The request's feature rows as float64 [rows, features] (the named input, else the
    first); an empty [0, 0] array when the log carries no numeric input."""
    tensors = [t for t in log.inputs if not input_name or t.name == input_name]
    if not tensors:
        return np.empty((0, 0))
    array = tensor_array(tensors[0]).astype(np.float64)
    if array.ndim == 1:
        return array.reshape(1, -1)
    return array.reshape(array.shape[0], -1)


def first_label(log: PredictionLog) -> str:
    """The predicted class of the first row: the `label` output, else the first output."""
    outputs = [t for t in log.outputs if t.name == LABEL_OUTPUT] or list(log.outputs)
    if not outputs:
        return ""
    try:
        values = tensor_array(outputs[0]).reshape(-1)
    except ValueError:
        return ""
    if not len(values):
        return ""
    return category_label(values[0])


def ground_truth_label(truth: GroundTruth) -> str | None:
    """The label as category text, or None when the event carries none."""
    kind = truth.WhichOneof("label")
    return None if kind is None else category_label(getattr(truth, kind))


def input_matrix(
    logs: Sequence[PredictionLog], input_name: str = ""
) -> tuple[np.ndarray, np.ndarray]:
    """The input rows of many logs at once: (rows each log contributed, int64 [logs]; the
    rows, [total rows, features]). A log without a readable numeric input adds no rows.
    When every tensor has one datatype and row width (what one model's gateway logs), the
    rows are read in one pass over the joined bytes, as float32 when that holds the
    datatype exactly (FP32, FP16, 8- and 16-bit integers: half the memory of float64) and
    float64 otherwise; else log by log, as float64."""
    tensors = _each_named(logs, "inputs", input_name, or_first=not input_name)
    if tensors:
        layouts = {(tensor.datatype, tuple(tensor.shape[1:])) for tensor in tensors}
        [(datatype, row_shape)] = layouts if len(layouts) == 1 else [("", ())]
        dtype = NUMPY_DTYPES.get(datatype) if datatype != "BYTES" else None
        width = int(np.prod(row_shape)) if row_shape else 0
        rows = np.array([tensor.shape[0] if tensor.shape else 0 for tensor in tensors])
        data = b"".join(tensor.data for tensor in tensors)
        if dtype is not None and width and len(data) == rows.sum() * width * dtype.itemsize:
            exact = np.result_type(dtype, np.float32)
            matrix = np.frombuffer(data, dtype=dtype).astype(exact, copy=False).reshape(-1, width)
            return rows.astype(np.int64), matrix
    return _input_matrix_one_by_one(logs, input_name)


def _input_matrix_one_by_one(
    logs: Sequence[PredictionLog], input_name: str
) -> tuple[np.ndarray, np.ndarray]:
    parts: list[np.ndarray] = []
    for log in logs:
        try:
            parts.append(input_rows(log, input_name))
        except ValueError:
            parts.append(np.empty((0, 0)))
    widths = [part.shape[1] for part in parts if len(part)]
    width = max(set(widths), key=widths.count) if widths else 0
    # Rows of another width than most cannot share the matrix: they count as unreadable.
    kept = [
        part if len(part) and part.shape[1] == width else np.empty((0, width)) for part in parts
    ]
    rows = np.array([len(part) for part in kept], dtype=np.int64)
    return rows, np.concatenate(kept) if kept else np.empty((0, 0))


def first_labels(logs: Sequence[PredictionLog]) -> list[str]:
    """`first_label` of each log; one pass over the values of all logs when every log has
    its label tensor of one numeric datatype."""
    tensors = _each_named(logs, "outputs", LABEL_OUTPUT, or_first=True)
    datatypes = {tensor.datatype for tensor in tensors}
    [datatype] = datatypes if len(datatypes) == 1 else [""]
    dtype = NUMPY_DTYPES.get(datatype) if datatype != "BYTES" else None
    if tensors and dtype is not None:
        size = dtype.itemsize
        firsts = [tensor.data[:size] for tensor in tensors]
        if all(len(first) == size for first in firsts):
            values, positions = np.unique(
                np.frombuffer(b"".join(firsts), dtype=dtype), return_inverse=True
            )
            labels = [category_label(value) for value in values.tolist()]
            return [labels[position] for position in positions.tolist()]
    return [first_label(log) for log in logs]


def first_confidences(logs: Sequence[PredictionLog]) -> np.ndarray:
    """The probability each log's model gave its predicted class for the first row (the
    largest of the first row of its `probabilities` output), float64 [logs]; empty unless
    every log has that output, in one numeric datatype and width."""
    tensors = _each_named(logs, "outputs", PROBABILITIES_OUTPUT, or_first=False)
    layouts = {(tensor.datatype, tuple(tensor.shape[1:])) for tensor in tensors}
    if len(layouts) != 1:
        return np.empty(0)
    [(datatype, row_shape)] = layouts
    dtype = NUMPY_DTYPES.get(datatype) if datatype != "BYTES" else None
    width = int(np.prod(row_shape)) if row_shape else 0
    if dtype is None or not width:
        return np.empty(0)
    row_bytes = width * dtype.itemsize
    firsts = [tensor.data[:row_bytes] for tensor in tensors]
    if any(len(first) != row_bytes for first in firsts):
        return np.empty(0)
    rows = np.frombuffer(b"".join(firsts), dtype=dtype).reshape(len(firsts), width)
    return np.asarray(rows.max(axis=1), dtype=np.float64)


def _each_named(
    logs: Sequence[PredictionLog], field: str, name: str, or_first: bool
) -> list[Tensor]:
    """Every log's tensor called `name` in `field` (inputs or outputs), or its first one
    when `or_first`; empty unless every log has one."""
    if not logs:
        return []
    # One model's logs list their tensors in one order: look the position up once.
    names = [tensor.name for tensor in getattr(logs[0], field)]
    if name not in names and not or_first:
        return []  # the first log has none
    position = names.index(name) if name in names else 0
    try:
        found = [getattr(log, field)[position] for log in logs]
    except IndexError:
        found = []
    if found and (not name or all(tensor.name == name for tensor in found)):
        return found
    return _each_named_one_by_one(logs, field, name, or_first)


def _each_named_one_by_one(
    logs: Sequence[PredictionLog], field: str, name: str, or_first: bool
) -> list[Tensor]:
    found: list[Tensor] = []
    for log in logs:
        tensors = getattr(log, field)
        tensor = next((t for t in tensors if t.name == name), None) if name else None
        if tensor is None:
            if not or_first or not tensors:
                return []
            tensor = tensors[0]
        found.append(tensor)
    return found
