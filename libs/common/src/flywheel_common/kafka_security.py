"""The one place Kafka clients get their connection options: brokers, TLS and SASL."""

from __future__ import annotations

import ssl
from typing import Literal, NotRequired, TypedDict

from aiokafka.helpers import create_ssl_context

from flywheel_common.settings import KafkaSettings


class KafkaClientOptions(TypedDict):
    """Keyword arguments every aiokafka producer, consumer and admin client takes."""

    bootstrap_servers: str
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
    ssl_context: ssl.SSLContext | None
    sasl_mechanism: NotRequired[str]
    sasl_plain_username: NotRequired[str]
    sasl_plain_password: NotRequired[str]


def kafka_client_options(settings: KafkaSettings) -> KafkaClientOptions:
    """Splat into AIOKafkaProducer, AIOKafkaConsumer or AIOKafkaAdminClient:
    `AIOKafkaConsumer(**kafka_client_options(settings), group_id=...)`."""
    options = KafkaClientOptions(
        bootstrap_servers=settings.bootstrap_servers,
        security_protocol=settings.security_protocol,
        ssl_context=kafka_ssl_context(settings),
    )
    if settings.uses_sasl:
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return options


def kafka_ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """The TLS context of SSL and SASL_SSL (None for the protocols without TLS): the
    configured CA bundle (else the system's), the client certificate when one is set."""
    if not settings.uses_ssl:
        return None
    context: ssl.SSLContext = create_ssl_context(
        cafile=settings.ssl_cafile,
        certfile=settings.ssl_certfile,
        keyfile=settings.ssl_keyfile,
        # A string, even empty: with None OpenSSL would prompt on the terminal for the
        # password of an encrypted key instead of failing.
        password=settings.ssl_key_password.get_secret_value(),
    )
    context.check_hostname = settings.ssl_check_hostname
    return context
