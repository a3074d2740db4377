"""Faust's form of the Kafka security settings, built from the same TLS context as every
other client's (flywheel_common.kafka_security)."""

from __future__ import annotations

from faust.auth import SASLCredentials, SSLCredentials
from faust.types.auth import CredentialsT

from flywheel_common.kafka_security import kafka_ssl_context
from flywheel_common.settings import KafkaSettings


def faust_credentials(settings: KafkaSettings) -> CredentialsT | None:
    """The app's `broker_credentials`: faust gives them to its consumer and producers.
    SASLCredentials means SASL_SSL with a TLS context and SASL_PLAINTEXT without one."""
    context = kafka_ssl_context(settings)
    if settings.uses_sasl:
        return SASLCredentials(
            username=settings.sasl_username,
            password=settings.sasl_password.get_secret_value(),
            ssl_context=context,
            mechanism=settings.sasl_mechanism,
        )
    if context is not None:
        return SSLCredentials(context)
    return None
