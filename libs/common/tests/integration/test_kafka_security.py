"""The SASL_SSL broker of `infra/kafka/start.sh --sasl-ssl` lets in only known users, over TLS,
and lets each do only what infra/kafka/acls.conf grants it."""

from __future__ import annotations

import logging
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError, TopicAuthorizationFailedError
from pydantic import SecretStr

from flywheel.gateway.v1.events_pb2 import PredictionLog
from flywheel.registry.v1.events_pb2 import ModelVersionPromoted
from flywheel_common.kafka_security import kafka_client_options
from flywheel_common.publisher import DeliveryFailed, EventPublisher
from flywheel_common.settings import KafkaSettings
from flywheel_common.topics import MODEL_EVENTS, PREDICTIONS, ensure_topics
from flywheel_testing.secure_kafka import SecureKafka


@pytest.fixture(scope="module")
async def provisioned(kafka_sasl_ssl: SecureKafka) -> SecureKafka:
    """The topics exist, created as a service creates them (its user may create them)."""
    await ensure_topics(kafka_sasl_ssl.settings("registry"))
    return kafka_sasl_ssl


async def _publish(settings: KafkaSettings, record_topic: str) -> None:
    publisher = EventPublisher(settings, source="flywheel-tests")
    await publisher.start()
    try:
        if record_topic == PREDICTIONS.name:
            record = PREDICTIONS.record(PredictionLog(model="m"), source="t", subject="m")
        else:
            record = MODEL_EVENTS.record(
                ModelVersionPromoted(model="m", version=1), source="t", subject="m"
            )
        await publisher.send([record])
    finally:
        await publisher.stop()


async def test_a_service_user_publishes_to_its_own_topic(provisioned: SecureKafka) -> None:
    await _publish(provisioned.settings("gateway", linger_ms=0), PREDICTIONS.name)


async def test_plain_is_accepted_as_well_as_scram(provisioned: SecureKafka) -> None:
    await _publish(
        provisioned.settings("gateway", sasl_mechanism="PLAIN", linger_ms=0), PREDICTIONS.name
    )


async def test_a_wrong_sasl_password_is_refused(
    provisioned: SecureKafka, caplog: pytest.LogCaptureFixture
) -> None:
    wrong = provisioned.settings("gateway", sasl_password=SecretStr("not-the-password"))
    publisher = EventPublisher(wrong, source="flywheel-tests")
    with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
        await publisher.start()
    await publisher.stop()
    messages = [record.getMessage() for record in caplog.records]
    refusals = [message for message in messages if "SaslAuthenticationFailed" in message]
    assert refusals, "the log says why the broker refused"
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in refusals[0]
    assert "not-the-password" not in caplog.text


async def test_an_unknown_user_is_refused(provisioned: SecureKafka) -> None:
    stranger = provisioned.settings(
        "gateway", sasl_username="mallory", sasl_password=SecretStr("guess")
    )
    consumer = AIOKafkaConsumer(**kafka_client_options(stranger))
    with pytest.raises(KafkaConnectionError):
        await consumer.start()
    await consumer.stop()


async def test_plaintext_is_refused_by_the_sasl_ssl_listener(provisioned: SecureKafka) -> None:
    plaintext = KafkaSettings(bootstrap_servers=provisioned.bootstrap, request_timeout_ms=5000)
    consumer = AIOKafkaConsumer(**kafka_client_options(plaintext), request_timeout_ms=5000)
    with pytest.raises(KafkaConnectionError):
        await consumer.start()
    await consumer.stop()


async def test_a_user_without_an_acl_for_a_topic_cannot_write_it(
    provisioned: SecureKafka, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.CRITICAL)  # the publisher logs the refusal it raises
    # Only the registry announces promotions: a gateway that could would redeploy models.
    with pytest.raises(DeliveryFailed) as failure:
        await _publish(provisioned.settings("gateway", linger_ms=0), MODEL_EVENTS.name)
    assert isinstance(failure.value.cause, TopicAuthorizationFailedError)
    assert MODEL_EVENTS.name in str(failure.value.cause)


async def test_a_user_without_an_acl_for_a_topic_cannot_read_it(provisioned: SecureKafka) -> None:
    # The model events are the registry's and the deployer's business, not the gateway's.
    consumer = AIOKafkaConsumer(
        MODEL_EVENTS.name,
        **kafka_client_options(provisioned.settings("gateway")),
        group_id=f"flywheel-gateway-test-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        with pytest.raises(TopicAuthorizationFailedError, match=MODEL_EVENTS.name):
            await consumer.getmany(timeout_ms=10_000)
    finally:
        await consumer.stop()
