"""The SASL_SSL broker of `infra/kafka/start.sh --sasl-ssl` for tests: started for the session
unless one is given, its users' credentials, and client settings as each user."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from flywheel_common.settings import KafkaSecurity, KafkaSettings
from flywheel_testing import backends

ROOT = Path(__file__).resolve().parents[4]
BOOTSTRAP_ENV = "FLYWHEEL_TEST_KAFKA_SASL_BOOTSTRAP"
"""A running SASL_SSL broker to use instead of starting one (with SECURITY_DIR_ENV)."""
SECURITY_DIR_ENV = "FLYWHEEL_TEST_KAFKA_SASL_DIR"
"""Its security folder (CA and passwords), as start.sh --sasl-ssl writes it."""
PORT_ENV = "FLYWHEEL_TEST_KAFKA_SASL_PORT"
"""Port of the broker the tests start; default the plaintext broker's port + 50."""


@dataclass(frozen=True)
class SecureKafka:
    bootstrap: str
    security_dir: Path

    def password(self, user: str) -> str:
        return (self.security_dir / "passwords" / user).read_text().strip()

    def security(self, user: str) -> KafkaSecurity:
        """How `user` (admin, a service's name, or cli) connects: SASL_SSL with
        SCRAM-SHA-512, trusting the broker's CA."""
        return KafkaSecurity(
            security_protocol="SASL_SSL",
            sasl_mechanism="SCRAM-SHA-512",
            sasl_username=user,
            sasl_password=SecretStr(self.password(user)),
            ssl_cafile=self.security_dir / "ca.pem",
        )

    def settings(self, user: str, **fields: Any) -> KafkaSettings:
        """Client settings of `user` for this broker; `fields` override them."""
        values = {"bootstrap_servers": self.bootstrap, **dict(self.security(user)), **fields}
        return KafkaSettings(**values)


def _port() -> int:
    if PORT_ENV in os.environ:
        return int(os.environ[PORT_ENV])
    return int(backends.kafka_address().split(",")[0].rsplit(":", 1)[1]) + 50


@contextmanager
def secure_kafka() -> Iterator[SecureKafka]:
    """The given SASL_SSL broker; else the one infra/kafka/start.sh --sasl-ssl runs on the
    port already; else one started here and stopped at the end. The run folder is the
    project's, so a later session reuses its CA, users and ACLs (the ACLs take a minute)."""
    if BOOTSTRAP_ENV in os.environ:
        yield SecureKafka(os.environ[BOOTSTRAP_ENV], Path(os.environ[SECURITY_DIR_ENV]))
        return
    port = _port()
    address = f"127.0.0.1:{port}"
    run_dir = Path(os.environ.get("FLYWHEEL_RUN_DIR", ROOT / ".run")).resolve() / "kafka-sasl-ssl"
    if backends.reachable(address):
        bootstrap_file = run_dir / "bootstrap"
        if bootstrap_file.exists() and bootstrap_file.read_text().strip() == address:
            yield SecureKafka(address, run_dir / "security")  # someone else's to stop
            return
        raise RuntimeError(
            f"port {port} is taken: set {PORT_ENV} to a free port for the SASL_SSL broker, "
            f"or {BOOTSTRAP_ENV} and {SECURITY_DIR_ENV} to use a running one"
        )
    env = os.environ | {"KAFKA_PORT": str(port), "KAFKA_SECURITY": "sasl-ssl"}
    kafka = ROOT / "infra/kafka"
    bootstrap = subprocess.run(
        [kafka / "start.sh"], env=env, check=True, stdout=subprocess.PIPE, text=True
    ).stdout.strip()
    try:
        yield SecureKafka(bootstrap, run_dir / "security")
    finally:
        subprocess.run([kafka / "stop.sh"], env=env, check=True)
