"""Kafka client options from settings: the protocol, SASL credentials and TLS context each
client gets, and the settings that cannot work refused before any connection."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from flywheel_common.kafka_security import kafka_client_options, kafka_ssl_context
from flywheel_common.settings import KafkaSettings, ServiceSettings


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CA, and a client certificate with its key signed by it (PEM files)."""
    folder = tmp_path_factory.mktemp("pki")

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=ca",
            "-keyout", "ca.key", "-out", "ca.pem")  # fmt: skip
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=client",
            "-keyout", "client.key", "-out", "client.csr")  # fmt: skip
    openssl("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-days", "2", "-out", "client.pem")  # fmt: skip
    return folder


def test_plaintext_by_default() -> None:
    options = kafka_client_options(KafkaSettings(bootstrap_servers="b1:9092,b2:9092"))
    assert options == {
        "bootstrap_servers": "b1:9092,b2:9092",
        "security_protocol": "PLAINTEXT",
        "ssl_context": None,
    }


def test_sasl_ssl_gives_scram_credentials_and_a_context_trusting_the_ca(pki: Path) -> None:
    settings = KafkaSettings(
        security_protocol="SASL_SSL",
        sasl_username="drift",
        sasl_password=SecretStr("s3cret"),
        ssl_cafile=pki / "ca.pem",
    )
    options = kafka_client_options(settings)
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "drift"
    assert options["sasl_plain_password"] == "s3cret"
    context = options["ssl_context"]
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED
    assert context.check_hostname
    assert [cert["subject"] for cert in context.get_ca_certs()] == [((("commonName", "ca"),),)]


def test_sasl_plaintext_sends_credentials_without_tls() -> None:
    options = kafka_client_options(
        KafkaSettings(
            security_protocol="SASL_PLAINTEXT", sasl_username="u", sasl_password=SecretStr("p")
        )
    )
    assert options["ssl_context"] is None
    assert options["sasl_plain_username"] == "u"


def test_ssl_with_a_client_certificate_and_no_hostname_check(pki: Path) -> None:
    settings = KafkaSettings(
        security_protocol="SSL",
        ssl_cafile=pki / "ca.pem",
        ssl_certfile=pki / "client.pem",
        ssl_keyfile=pki / "client.key",
        ssl_check_hostname=False,
    )
    options = kafka_client_options(settings)
    assert "sasl_mechanism" not in options
    context = options["ssl_context"]
    assert context is not None
    assert not context.check_hostname
    assert context.verify_mode is ssl.CERT_REQUIRED  # the broker's certificate is still checked


def test_a_client_key_that_does_not_match_its_certificate_fails_at_once(pki: Path) -> None:
    settings = KafkaSettings(
        security_protocol="SSL",
        ssl_certfile=pki / "client.pem",
        ssl_keyfile=pki / "ca.key",
    )
    with pytest.raises(ssl.SSLError):
        kafka_ssl_context(settings)


def test_the_system_cas_are_trusted_when_no_bundle_is_given() -> None:
    context = kafka_ssl_context(KafkaSettings(security_protocol="SSL"))
    assert context is not None
    assert context.verify_mode is ssl.CERT_REQUIRED


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"security_protocol": "SASL_SSL"}, "needs sasl_username and sasl_password"),
        (
            {"security_protocol": "SASL_SSL", "sasl_username": "u"},
            "needs sasl_username and sasl_password",
        ),
        (
            {
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "PLAIN",
                "sasl_username": "u",
                "sasl_password": "p",
            },
            "use it with SASL_SSL only",
        ),
        (
            {"security_protocol": "SSL", "ssl_certfile": "client.pem"},
            "set both or neither",
        ),
        ({"ssl_cafile": "ca.pem"}, "has no TLS"),
        ({"security_protocol": "TLS"}, "security_protocol"),
        ({"security_protocol": "SASL_SSL", "sasl_mechanism": "GSSAPI"}, "sasl_mechanism"),
    ],
)
def test_settings_that_cannot_work_are_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        KafkaSettings(**fields)  # type: ignore[arg-type]


class _Service(ServiceSettings):
    pass


def test_a_service_reads_them_from_its_environment_and_never_shows_the_password(
    monkeypatch: pytest.MonkeyPatch, pki: Path
) -> None:
    for name, value in {
        "FLYWHEEL_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "FLYWHEEL_KAFKA__SASL_MECHANISM": "PLAIN",
        "FLYWHEEL_KAFKA__SASL_USERNAME": "registry",
        "FLYWHEEL_KAFKA__SASL_PASSWORD": "hunter2-secret",
        "FLYWHEEL_KAFKA__SSL_CAFILE": str(pki / "ca.pem"),
    }.items():
        monkeypatch.setenv(name, value)
    kafka = _Service().kafka
    assert kafka.sasl_mechanism == "PLAIN"
    assert kafka.ssl_cafile == pki / "ca.pem"
    assert kafka.sasl_password.get_secret_value() == "hunter2-secret"
    assert "hunter2" not in repr(kafka)
    assert "hunter2" not in str(kafka.model_dump())
