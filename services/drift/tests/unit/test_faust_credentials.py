"""Faust's broker credentials say what every other client's options say."""

from __future__ import annotations

from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import AuthProtocol, SASLMechanism
from pydantic import SecretStr

from flywheel_common.kafka_security import kafka_client_options
from flywheel_common.settings import KafkaSettings
from flywheel_drift.faust_credentials import faust_credentials


def _sasl(protocol: str, mechanism: str = "SCRAM-SHA-512") -> KafkaSettings:
    return KafkaSettings(
        security_protocol=protocol,  # type: ignore[arg-type]
        sasl_mechanism=mechanism,  # type: ignore[arg-type]
        sasl_username="drift",
        sasl_password=SecretStr("s3cret"),
    )


def test_plaintext_needs_no_credentials() -> None:
    assert faust_credentials(KafkaSettings()) is None


def test_sasl_ssl_is_scram_over_tls() -> None:
    credentials = faust_credentials(_sasl("SASL_SSL"))
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_SSL
    assert credentials.mechanism is SASLMechanism.SCRAM_SHA_512
    assert (credentials.username, credentials.password) == ("drift", "s3cret")
    assert credentials.ssl_context is not None
    assert "s3cret" not in repr(credentials)


def test_sasl_plaintext_has_no_tls_context() -> None:
    credentials = faust_credentials(_sasl("SASL_PLAINTEXT"))
    assert isinstance(credentials, SASLCredentials)
    assert credentials.protocol is AuthProtocol.SASL_PLAINTEXT
    assert credentials.ssl_context is None


def test_ssl_alone_is_a_tls_context() -> None:
    credentials = faust_credentials(KafkaSettings(security_protocol="SSL"))
    assert isinstance(credentials, SSLCredentials)
    assert credentials.protocol is AuthProtocol.SSL


def test_faust_hands_its_clients_the_same_options_as_ours() -> None:
    for settings in (_sasl("SASL_SSL", "PLAIN"), _sasl("SASL_PLAINTEXT"), KafkaSettings()):
        faust_side = credentials_to_aiokafka_auth(faust_credentials(settings))
        ours = kafka_client_options(settings)
        assert faust_side["security_protocol"] == ours["security_protocol"]
        for key in ("sasl_mechanism", "sasl_plain_username", "sasl_plain_password"):
            assert faust_side.get(key) == ours.get(key)
        assert (faust_side.get("ssl_context") is None) == (ours["ssl_context"] is None)
