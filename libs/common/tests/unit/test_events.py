import json
from datetime import UTC, datetime

import pytest
from cloudevents.core.bindings import kafka as sdk_kafka
from cloudevents.core.v1.event import CloudEvent
from google.protobuf.wrappers_pb2 import StringValue
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from flywheel.registry.v1 import events_pb2 as registry_events
from flywheel_common.events import (
    JSON,
    PROTOBUF,
    EventTypes,
    MalformedEvent,
    decode_event,
    decode_message,
    encode_event,
    event_type,
    header,
)

TYPES = EventTypes.flywheel()


def registered(version: int = 3) -> registry_events.ModelVersionRegistered:
    return registry_events.ModelVersionRegistered(
        model="iris", version=version, description="first", params={"C": "1.0"}
    )


def test_protobuf_event_round_trips_with_every_cloudevent_header() -> None:
    when = datetime(2026, 11, 23, 12, 0, 0, tzinfo=UTC)
    record = encode_event(
        "flywheel.model-events", registered(), source="flywheel-registry", subject="iris", time=when
    )
    names = [name for name, _ in record.headers]
    for required in ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time", "ce_subject"):
        assert required in names
    assert header(record.headers, "ce_specversion") == "1.0"
    assert header(record.headers, "ce_type") == "flywheel.registry.v1.ModelVersionRegistered"
    assert header(record.headers, "content-type") == PROTOBUF
    assert header(record.headers, "ce_time") == "2026-11-23T12:00:00Z"
    assert record.key == b"iris"

    envelope = decode_event(record.headers, record.value, TYPES, key=record.key)
    assert envelope.message == registered()
    assert envelope.id == record.event_id
    assert envelope.source == "flywheel-registry"
    assert envelope.subject == "iris"
    assert envelope.time == when
    assert envelope.key == b"iris"


def test_json_payload_is_readable_by_jq_and_round_trips() -> None:
    record = encode_event(
        "flywheel.drift-alerts", registered(), source="s", subject="iris", content_type=JSON
    )
    assert header(record.headers, "content-type") == JSON
    assert json.loads(record.value)["model"] == "iris"
    assert decode_event(record.headers, record.value, TYPES).message == registered()


def test_key_can_differ_from_the_subject() -> None:
    record = encode_event("t", registered(), source="s", subject="iris", key="gateway-1")
    assert record.key == b"gateway-1"


def test_traceparent_of_the_current_span_is_propagated(
    span_exporter: InMemorySpanExporter,
) -> None:
    with trace.get_tracer("test").start_as_current_span("produce") as span:
        record = encode_event("t", registered(), source="s", subject="iris")
    traceparent = header(record.headers, "traceparent")
    assert traceparent is not None
    assert traceparent.split("-")[1] == format(span.get_span_context().trace_id, "032x")
    envelope = decode_event(record.headers, record.value, TYPES)
    restored = trace.get_current_span(envelope.trace_context()).get_span_context()
    assert restored.trace_id == span.get_span_context().trace_id


def test_every_topic_message_is_registered() -> None:
    for name in (
        "flywheel.registry.v1.ModelVersionPromoted",
        "flywheel.deployer.v1.DeploymentState",
        "flywheel.gateway.v1.PredictionLog",
        "flywheel.gateway.v1.GatewayStatus",
        "flywheel.drift.v1.DriftAlert",
        "flywheel.drift.v1.ModelMetricsWindow",
        "flywheel.drift.v1.GroundTruth",
        "flywheel.retrain.v1.RetrainRequested",
    ):
        assert name in TYPES, name


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda h, v: ([x for x in h if x[0] != "ce_id"], v), "missing header ce_id"),
        (lambda h, v: ([x for x in h if x[0] != "ce_type"], v), "missing header ce_type"),
        (
            lambda h, v: ([(k, b"x.Unknown" if k == "ce_type" else b) for k, b in h], v),
            "unknown ce_type",
        ),
        (lambda h, v: (h, b"\xff\xff\xff"), "payload is not a valid"),
        (
            lambda h, v: ([(k, b"text/csv" if k == "content-type" else b) for k, b in h], v),
            "unsupported content-type",
        ),
        (
            lambda h, v: ([(k, b"0.3" if k == "ce_specversion" else b) for k, b in h], v),
            "unsupported ce_specversion '0.3'",
        ),
        (
            lambda h, v: ([(k, b"yesterday" if k == "ce_time" else b) for k, b in h], v),
            "ce_time 'yesterday' is not RFC 3339",
        ),
        (
            lambda h, v: ([(k, b"\xff" if k == "ce_source" else b) for k, b in h], v),
            "header ce_source is not UTF-8",
        ),
    ],
)
def test_malformed_records_say_what_is_wrong(mutate, reason: str) -> None:  # type: ignore[no-untyped-def]
    record = encode_event("t", registered(), source="s", subject="iris")
    headers, value = mutate(record.headers, record.value)
    with pytest.raises(MalformedEvent, match=reason):
        decode_event(headers, value, TYPES)
    with pytest.raises(MalformedEvent, match=reason):  # the same checks without the envelope
        decode_message(headers, value, TYPES)


def test_decode_message_gives_the_message_decode_event_gives() -> None:
    for content_type in (PROTOBUF, JSON):
        record = encode_event(
            "t", registered(), source="s", subject="iris", content_type=content_type
        )
        message = decode_message(record.headers, record.value, TYPES)
        assert message == decode_event(record.headers, record.value, TYPES).message == registered()


def test_header_names_are_read_in_any_case() -> None:
    """Kafka header names are case-sensitive; the binding's attribute names are not."""
    record = encode_event("t", registered(), source="s", subject="iris", content_type=JSON)
    shouted = [(name.upper(), value) for name, value in record.headers]
    envelope = decode_event(shouted, record.value, TYPES)
    assert (envelope.id, envelope.subject, envelope.content_type) == (record.event_id, "iris", JSON)
    assert decode_message(shouted, record.value, TYPES) == registered()


def test_event_type_is_the_full_protobuf_name() -> None:
    assert event_type(StringValue) == "google.protobuf.StringValue"
    assert event_type(registered()) == "flywheel.registry.v1.ModelVersionRegistered"


class _Bytes:
    """A CloudEvents SDK format that moves payload bytes unchanged."""

    def write_data(self, data: bytes, datacontenttype: str | None) -> bytes:
        return data

    def read_data(self, body: bytes, datacontenttype: str | None) -> bytes:
        return body


def test_the_cloudevents_sdk_reads_our_records() -> None:
    record = encode_event("t", registered(), source="flywheel-registry", subject="iris")
    parsed = sdk_kafka.from_binary(
        sdk_kafka.KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value),
        _Bytes(),  # type: ignore[arg-type]
    )
    assert parsed.get_id() == record.event_id
    assert parsed.get_type() == "flywheel.registry.v1.ModelVersionRegistered"
    assert parsed.get_source() == "flywheel-registry"
    assert parsed.get_subject() == "iris"
    assert parsed.get_datacontenttype() == PROTOBUF
    assert parsed.get_time() is not None
    assert registry_events.ModelVersionRegistered.FromString(parsed.get_data()) == registered()


def test_we_read_records_written_by_the_cloudevents_sdk() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 600000, tzinfo=UTC)
    event = CloudEvent(
        {
            "id": "evt-1",
            "source": "data-platform",
            "type": "flywheel.registry.v1.ModelVersionRegistered",
            "subject": "iris",
            "time": when,
            "datacontenttype": PROTOBUF,
        },
        registered().SerializeToString(),
    )
    message = sdk_kafka.to_binary(event, _Bytes())  # type: ignore[arg-type]
    envelope = decode_event(list(message.headers.items()), message.value, TYPES)
    assert envelope.id == "evt-1"
    assert envelope.source == "data-platform"
    assert envelope.subject == "iris"
    assert envelope.time == when
    assert envelope.message == registered()
