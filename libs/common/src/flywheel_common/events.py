"""The event envelope: CloudEvents 1.0 in Kafka binary mode around protobuf messages."""

from __future__ import annotations

import importlib
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from opentelemetry import propagate
from opentelemetry.context import Context

PROTOBUF = "application/protobuf"
JSON = "application/json"
CONTENT_TYPES = (PROTOBUF, JSON)

Headers = Sequence[tuple[str, bytes]]

# The proto modules whose messages travel on Flywheel's topics (DESIGN.md, "Topics").
EVENT_MODULES = (
    "flywheel.registry.v1.events_pb2",
    "flywheel.deployer.v1.events_pb2",
    "flywheel.gateway.v1.events_pb2",
    "flywheel.drift.v1.events_pb2",
    "flywheel.drift.v1.ground_truth_pb2",
    "flywheel.retrain.v1.events_pb2",
)


class MalformedEvent(ValueError):
    """A Kafka record that is not a Flywheel CloudEvent; the reason says which rule it broke."""


def event_type(message: Message | type[Message]) -> str:
    """The `ce_type` of a message: its protobuf full name."""
    return str(message.DESCRIPTOR.full_name)


class EventTypes:
    """Maps `ce_type` to the protobuf class that decodes the payload."""

    def __init__(self, classes: Iterable[type[Message]] = ()) -> None:
        self._classes: dict[str, type[Message]] = {}
        for cls in classes:
            self.register(cls)

    def register(self, cls: type[Message]) -> None:
        self._classes[event_type(cls)] = cls

    def __contains__(self, ce_type: object) -> bool:
        return ce_type in self._classes

    def message_class(self, ce_type: str) -> type[Message]:
        try:
            return self._classes[ce_type]
        except KeyError:
            raise MalformedEvent(f"unknown ce_type {ce_type!r}") from None

    @classmethod
    def flywheel(cls) -> EventTypes:
        """Every message declared in Flywheel's event protos."""
        types = cls()
        for module_name in EVENT_MODULES:
            module = importlib.import_module(module_name)
            for name in module.DESCRIPTOR.message_types_by_name:
                types.register(getattr(module, name))
        return types


@dataclass(frozen=True)
class OutgoingRecord:
    """An encoded event, ready for a producer or an outbox row."""

    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]

    @property
    def event_id(self) -> str:
        return header(self.headers, "ce_id") or ""


@dataclass(frozen=True)
class Envelope:
    """A decoded event: its CloudEvent attributes, its message and the raw headers."""

    id: str
    source: str
    type: str
    subject: str | None
    time: datetime | None
    content_type: str
    message: Message
    headers: Headers = field(default_factory=list)
    key: bytes | None = None

    def trace_context(self) -> Context:
        """The producer's trace context, so a consumer span continues the same trace."""
        return propagate.extract(
            {name: value.decode("latin-1") for name, value in self.headers},
        )


def header(headers: Headers, name: str) -> str | None:
    """The first value of a header as text, or None."""
    for key, value in headers:
        if key == name:
            return value.decode("utf-8", errors="replace")
    return None


SPEC_VERSION = "1.0"
_REQUIRED_HEADERS = ("ce_specversion", "ce_id", "ce_source", "ce_type")


def _format_time(when: datetime) -> str:
    """RFC 3339 in UTC with a Z, as the CloudEvents spec writes it."""
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


def encode_event(
    topic: str,
    message: Message,
    *,
    source: str,
    subject: str | None,
    key: str | bytes | None = None,
    content_type: str = PROTOBUF,
    event_id: str | None = None,
    time: datetime | None = None,
) -> OutgoingRecord:
    """Wrap a message in a binary-mode CloudEvent; the Kafka key defaults to the subject."""
    if content_type == PROTOBUF:
        payload = message.SerializeToString(deterministic=True)
    elif content_type == JSON:
        payload = json_format.MessageToJson(message, indent=None, sort_keys=True).encode()
    else:
        raise ValueError(f"content type must be one of {CONTENT_TYPES}, not {content_type!r}")
    return event_record(
        topic,
        payload,
        event_type(message),
        source=source,
        subject=subject,
        key=key,
        content_type=content_type,
        event_id=event_id,
        time=time,
    )


def event_record(
    topic: str,
    payload: bytes,
    ce_type: str,
    *,
    source: str,
    subject: str | None,
    key: str | bytes | None = None,
    content_type: str = PROTOBUF,
    event_id: str | None = None,
    time: datetime | None = None,
) -> OutgoingRecord:
    """A binary-mode CloudEvent around a payload already encoded as `content_type` (a
    message of type `ce_type`); the Kafka key defaults to the subject.

    The Kafka protocol binding is a fixed mapping of attributes to `ce_` headers, written
    here directly: every record of prediction logs passes here, and tests check the result
    against the CloudEvents SDK both ways.
    """
    if not source:
        raise ValueError("a CloudEvent needs a non-empty source")
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", (event_id or str(uuid.uuid4())).encode()),
        ("ce_source", source.encode()),
        ("ce_type", ce_type.encode()),
        ("ce_time", _format_time(time or datetime.now(UTC)).encode()),
        ("content-type", content_type.encode()),
    ]
    if subject:
        headers.append(("ce_subject", subject.encode()))
    trace_headers: dict[str, str] = {}
    propagate.inject(trace_headers)
    headers.extend((name, value.encode()) for name, value in trace_headers.items())
    record_key = key if key is not None else subject
    return OutgoingRecord(
        topic=topic,
        key=record_key.encode() if isinstance(record_key, str) else record_key,
        value=payload,
        headers=headers,
    )


_AS_WRITTEN = {
    name: name
    for name in (
        "ce_specversion",
        "ce_id",
        "ce_source",
        "ce_type",
        "ce_time",
        "ce_subject",
        "ce_dataschema",
        "content-type",
    )
}
"""The attribute headers under the names `record` writes, looked up as they are: a stream
of one label per record decodes every record's headers, and lowering each name cost a third
of that."""


def _attributes(headers: Headers) -> dict[str, str]:
    attributes: dict[str, str] = {}
    for name, raw in headers:
        attribute = _AS_WRITTEN.get(name)
        if attribute is None:
            attribute = name.lower()
            if not (attribute.startswith("ce_") or attribute == "content-type"):
                continue
        try:
            attributes[attribute] = raw.decode()
        except UnicodeDecodeError:
            raise MalformedEvent(f"header {name} is not UTF-8") from None
    for required in _REQUIRED_HEADERS:
        if not attributes.get(required):
            raise MalformedEvent(f"missing header {required}")
    if attributes["ce_specversion"] != SPEC_VERSION:
        raise MalformedEvent(
            f"unsupported ce_specversion {attributes['ce_specversion']!r}; expected 1.0"
        )
    return attributes


def decode_event(
    headers: Headers, value: bytes | None, types: EventTypes, key: bytes | None = None
) -> Envelope:
    """Parse a binary-mode CloudEvent; raises MalformedEvent saying what is wrong."""
    attributes, time, message = _decode(headers, value, types)
    return Envelope(
        id=attributes["ce_id"],
        source=attributes["ce_source"],
        type=attributes["ce_type"],
        subject=attributes.get("ce_subject"),
        time=time,
        content_type=attributes.get("content-type", PROTOBUF),
        message=message,
        headers=list(headers),
        key=key,
    )


def decode_message(headers: Headers, value: bytes | None, types: EventTypes) -> Message:
    """The message of a binary-mode CloudEvent, checked as `decode_event` checks it, for
    a consumer that needs nothing else of the envelope: a stream of one small event per
    record spends a third of a decode building the envelope."""
    return _decode(headers, value, types)[2]


def _decode(
    headers: Headers, value: bytes | None, types: EventTypes
) -> tuple[dict[str, str], datetime | None, Message]:
    attributes = _attributes(headers)
    time: datetime | None = None
    if "ce_time" in attributes:
        try:
            time = datetime.fromisoformat(attributes["ce_time"])
        except ValueError:
            raise MalformedEvent(f"ce_time {attributes['ce_time']!r} is not RFC 3339") from None
    ce_type = attributes["ce_type"]
    content_type = attributes.get("content-type", PROTOBUF)
    message = types.message_class(ce_type)()
    try:
        if content_type == PROTOBUF:
            message.ParseFromString(value or b"")
        elif content_type.startswith(JSON):
            json_format.Parse(value or b"", message)
        else:
            raise MalformedEvent(f"unsupported content-type {content_type!r}")
    except (DecodeError, json_format.ParseError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"payload is not a valid {ce_type} ({content_type}): {exc}") from exc
    return attributes, time, message
