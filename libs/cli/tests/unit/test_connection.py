"""Errors that say what to fix: an unreachable service apart from one that answered."""

from __future__ import annotations

import grpc
import pytest
from flywheel_cli.connection import Addresses, explain


def status(code: grpc.StatusCode, details: str) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details)


def test_a_service_that_cannot_be_reached_is_named_with_its_address() -> None:
    message = explain(
        "gateway",
        "127.0.0.1:8001",
        status(
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:8001: "
            "Failed to connect to remote host: Connection refused",
        ),
    )
    assert message.startswith("cannot reach the gateway at 127.0.0.1:8001")
    assert "FLYWHEEL_CLI_GATEWAY" in message


def test_an_unavailable_answer_from_the_service_is_shown_as_it_is() -> None:
    details = "model 'breast-cancer' has no routed version ready yet; retry shortly"
    message = explain("gateway", "127.0.0.1:8001", status(grpc.StatusCode.UNAVAILABLE, details))
    assert message == f"{details} (unavailable)"


def test_kafka_security_comes_from_the_environment_like_the_services(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FLYWHEEL_CLI_KAFKA", "b1:9093")
    monkeypatch.setenv("FLYWHEEL_CLI_KAFKA_AUTH__SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("FLYWHEEL_CLI_KAFKA_AUTH__SASL_USERNAME", "cli")
    monkeypatch.setenv("FLYWHEEL_CLI_KAFKA_AUTH__SASL_PASSWORD", "pw")
    settings = Addresses().kafka_settings(linger_ms=20)
    assert settings.bootstrap_servers == "b1:9093"
    assert settings.security_protocol == "SASL_SSL"
    assert settings.sasl_mechanism == "SCRAM-SHA-512"
    assert (settings.sasl_username, settings.sasl_password.get_secret_value()) == ("cli", "pw")
    assert settings.linger_ms == 20


def test_kafka_is_plaintext_by_default() -> None:
    assert Addresses().kafka_settings().security_protocol == "PLAINTEXT"
