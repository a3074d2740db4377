"""Hypothesis strategies for any protobuf message, built from its descriptor.

Every field gets the values an attacker would try: extreme and negative numbers, NaN and
Inf, empty, huge, unicode and path-like strings, unknown enum numbers, Timestamps and
Durations out of range, lists and maps. Strings in fields that name a model, an alias or
an id are drawn mostly from `names`, so calls reach past the first lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import strategies as st

from inference import grpc_service_pb2 as inference_pb

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)

HUGE_TEXT = "x" * 300_000
NASTY_TEXT = (
    "",
    " ",
    "\x00",
    "-1",
    "0",
    "*",
    "%",
    "_",
    "99999999999999999999",
    "-99999999999999999999",
    "NaN",
    "../../../etc/passwd",
    "..",
    "a/b",
    "C:\\Windows",
    "Ünïcødé-名前-🙂",
    "\u202e\u200b",
    "'; DROP TABLE models; --",
    "a" * 129,
    "a" * 5000,
    HUGE_TEXT,
)
# Field names whose strings name something the services look up.
NAME_FIELDS = frozenset(
    {"model", "name", "model_name", "models", "alias", "aliases", "rollout_id", "run_id"}
)
TIMESTAMP_OR_DURATION = frozenset({"google.protobuf.Timestamp", "google.protobuf.Duration"})


def _integers(low: int, high: int) -> st.SearchStrategy[int]:
    edges = sorted(edge for edge in {low, high, 0, 1, -1, low + 1, high - 1} if low <= edge <= high)
    return st.one_of(st.sampled_from(edges), st.integers(low, high))


def text() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(NASTY_TEXT), st.text(max_size=40))


def _scalar(field: FieldDescriptor, names: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return st.one_of(names, text()) if field.name in NAME_FIELDS else text()
    if kind == FieldDescriptor.TYPE_BYTES:
        return st.one_of(st.binary(max_size=64), st.just(b"\x00" * 300_000))
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind == FieldDescriptor.TYPE_FLOAT:
        return st.floats(width=32, allow_nan=True, allow_infinity=True)
    if kind == FieldDescriptor.TYPE_DOUBLE:
        return st.floats(allow_nan=True, allow_infinity=True)
    if kind == FieldDescriptor.TYPE_ENUM:
        numbers = [value.number for value in field.enum_type.values]
        return st.one_of(st.sampled_from(numbers), _integers(*INT32))
    if kind in (
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SFIXED32,
    ):
        return _integers(*INT32)
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return _integers(*UINT32)
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return _integers(*UINT64)
    return _integers(*INT64)  # int64, sint64, sfixed64


def _time_field(descriptor: Descriptor) -> st.SearchStrategy[Message]:
    """Timestamps and Durations: mostly in range, often just outside, sometimes absurd."""
    message_class = GetMessageClass(descriptor)
    return st.builds(
        lambda seconds, nanos: message_class(seconds=seconds, nanos=nanos),
        st.one_of(
            st.integers(0, 4_000_000_000),
            st.sampled_from([-(10**11), -62_135_596_801, 253_402_300_800, 2**62, -1]),
            _integers(*INT64),
        ),
        st.one_of(st.integers(0, 999_999_999), _integers(*INT32)),
    )


def messages(
    descriptor: Descriptor,
    names: st.SearchStrategy[str],
    depth: int = 3,
    overrides: Mapping[str, st.SearchStrategy[Message]] | None = None,
) -> st.SearchStrategy[Message]:
    """Messages of `descriptor` with any subset of their fields set. `overrides` gives the
    strategy of named message types (for example a tensor-aware one)."""
    overrides = overrides or {}
    if descriptor.full_name in overrides:
        return overrides[descriptor.full_name]
    if descriptor.full_name in TIMESTAMP_OR_DURATION:
        return _time_field(descriptor)
    message_class = GetMessageClass(descriptor)
    if depth <= 0:
        return st.builds(message_class)
    fields = {
        field.name: _field(field, names, depth, overrides)
        for field in descriptor.fields
        if not (field.message_type and field.message_type.full_name == descriptor.full_name)
    }
    return st.fixed_dictionaries({}, optional=fields).map(
        lambda values: _build(message_class, descriptor, values)
    )


def _field(
    field: FieldDescriptor,
    names: st.SearchStrategy[str],
    depth: int,
    overrides: Mapping[str, st.SearchStrategy[Message]],
) -> st.SearchStrategy[Any]:
    if _is_map(field):
        key_field, value_field = (
            field.message_type.fields_by_name["key"],
            field.message_type.fields_by_name["value"],
        )
        return st.dictionaries(
            _single(key_field, names, depth, overrides),
            _single(value_field, names, depth, overrides),
            max_size=3,
        )
    single = _single(field, names, depth, overrides)
    if field.is_repeated:
        return st.lists(single, max_size=4)
    return single


def _single(
    field: FieldDescriptor,
    names: st.SearchStrategy[str],
    depth: int,
    overrides: Mapping[str, st.SearchStrategy[Message]],
) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(field.message_type, names, depth - 1, overrides)
    return _scalar(field, names)


def _is_map(field: FieldDescriptor) -> bool:
    message_type = field.message_type
    return bool(message_type is not None and message_type.GetOptions().map_entry)


def _build(
    message_class: Callable[[], Message], descriptor: Descriptor, values: Mapping[str, Any]
) -> Message:
    message = message_class()
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        target = getattr(message, name)
        if _is_map(field):
            message_valued = field.message_type.fields_by_name["value"].message_type is not None
            for key, item in value.items():
                if message_valued:
                    target[key].CopyFrom(item)
                else:
                    target[key] = item
        elif field.is_repeated:
            if field.type == FieldDescriptor.TYPE_MESSAGE:
                for item in value:
                    target.add().CopyFrom(item)
            else:
                target.extend(value)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            target.CopyFrom(value)
        else:
            setattr(message, name, value)
    return message


def serialized(stream: Sequence[Message] | Message) -> list[bytes] | bytes:
    if isinstance(stream, Message):
        return stream.SerializeToString()
    return [message.SerializeToString() for message in stream]


DATATYPES = (
    "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
    "FP16", "FP32", "FP64", "BYTES", "BF16",
)  # fmt: skip
CONTENTS = {
    "bool_contents": st.booleans(),
    "int_contents": _integers(*INT32),
    "int64_contents": _integers(*INT64),
    "uint_contents": _integers(*UINT32),
    "uint64_contents": _integers(*UINT64),
    "fp32_contents": st.floats(width=32, allow_nan=True, allow_infinity=True),
    "fp64_contents": st.floats(allow_nan=True, allow_infinity=True),
    "bytes_contents": st.binary(max_size=16),
}
SHAPES = st.one_of(
    st.integers(0, 8).map(lambda rows: [rows, 4]),  # what the served model takes
    st.lists(st.integers(-2, 6), max_size=4),
    st.lists(_integers(*INT64), min_size=1, max_size=3),
    st.sampled_from([[1] * 65, [1] * 33, [0, 2**62], [2**31, 2**31], [2**62, 0, 2**62], []]),
)


def _count(shape: Sequence[int]) -> int:
    count = 1
    for dim in shape:
        count *= dim
    return count


@st.composite
def infer_requests(draw: st.DrawFn, models: st.SearchStrategy[str], input_name: str) -> Message:
    """ModelInferRequests with wrong and right tensor shapes, datatypes, contents and raw
    byte lengths, for the served model (`models`) and others."""
    request = inference_pb.ModelInferRequest(
        model_name=draw(st.one_of(models, text())),
        model_version=draw(st.sampled_from(["", "", "1", "2", "0", "-1", "99999999999999999999"])),
        id=draw(st.one_of(st.just(""), text())),
    )
    use_raw = draw(st.booleans())
    for _ in range(draw(st.integers(0, 3) if draw(st.booleans()) else st.just(1))):
        shape = draw(SHAPES)
        datatype = draw(st.one_of(st.just("FP32"), st.sampled_from(DATATYPES), text()))
        tensor = request.inputs.add(
            name=draw(st.one_of(st.just(input_name), text())), datatype=datatype
        )
        tensor.shape.extend(shape)
        count = _count(shape)
        wanted = count if 0 <= count <= 64 else draw(st.integers(0, 8))
        if use_raw:
            item = 4 if datatype not in DATATYPES else _ITEM_SIZES.get(datatype, 1)
            size = draw(
                st.sampled_from([wanted * item, wanted * item + 1, max(wanted * item - 1, 0)])
            )
            request.raw_input_contents.append(
                draw(st.one_of(st.binary(min_size=size, max_size=size), st.binary(max_size=64)))
            )
        else:
            field = draw(st.sampled_from(sorted(CONTENTS)))
            values = draw(st.lists(CONTENTS[field], min_size=wanted, max_size=wanted))
            getattr(tensor.contents, field).extend(values)
    for name in draw(
        st.lists(st.one_of(st.sampled_from(["label", "probabilities"]), text()), max_size=2)
    ):
        request.outputs.add(name=name)
    if use_raw and draw(st.booleans()):
        request.raw_input_contents.append(b"\x00" * 4)  # one more than there are inputs
    return request


_ITEM_SIZES = {
    "BOOL": 1, "UINT8": 1, "INT8": 1, "UINT16": 2, "INT16": 2, "FP16": 2, "BF16": 2,
    "UINT32": 4, "INT32": 4, "FP32": 4, "UINT64": 8, "INT64": 8, "FP64": 8, "BYTES": 4,
}  # fmt: skip
