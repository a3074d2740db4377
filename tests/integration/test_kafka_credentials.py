"""A service process takes its Kafka security from environment variables, as an operator sets
them: with its own SASL_SSL user it serves; with a wrong password it exits and says why,
without the password."""

import asyncio
import os
import sys
from pathlib import Path

from flywheel_common.healthcheck import wait_until_serving
from flywheel_testing.backends import unused_port
from flywheel_testing.secure_kafka import SecureKafka
from flywheel_testing.tls import pki, tls_environment


def _environment(name: str, kafka: SecureKafka, password: str, data_dir: Path) -> dict[str, str]:
    prefix = f"FLYWHEEL_{name.upper()}_"
    return os.environ | {
        f"{prefix}GRPC__PORT": str(unused_port()),
        f"{prefix}HTTP__PORT": "0",
        f"{prefix}DATA_DIR": str(data_dir),
        f"{prefix}TELEMETRY__METRICS_PORT": "-1",
        f"{prefix}AUTH__ALLOW_ANONYMOUS": "true",  # this test is about Kafka's credentials
        **tls_environment(prefix),
        f"{prefix}KAFKA__BOOTSTRAP_SERVERS": kafka.bootstrap,
        f"{prefix}KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        f"{prefix}KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        f"{prefix}KAFKA__SASL_USERNAME": name,
        f"{prefix}KAFKA__SASL_PASSWORD": password,
        f"{prefix}KAFKA__SSL_CAFILE": str(kafka.security_dir / "ca.pem"),
    }


async def test_a_service_serves_as_its_own_kafka_user(
    kafka_sasl_ssl: SecureKafka, tmp_path: Path
) -> None:
    name = "gateway"  # the loop test runs every service on SASL_SSL; one process suffices here
    env = _environment(name, kafka_sasl_ssl, kafka_sasl_ssl.password(name), tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"flywheel_{name}", env=env
    )
    try:
        address = f"127.0.0.1:{env[f'FLYWHEEL_{name.upper()}_GRPC__PORT']}"
        assert await wait_until_serving([address], pki().client_tls(), timeout=90.0) == []
    finally:
        process.terminate()
        assert await process.wait() == 0


async def test_a_service_with_a_wrong_kafka_password_exits_and_says_why(
    kafka_sasl_ssl: SecureKafka, tmp_path: Path
) -> None:
    env = _environment("gateway", kafka_sasl_ssl, "wrong-password-1234", tmp_path)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "flywheel_gateway", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    output = stderr.decode()
    assert process.returncode != 0
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in output
    assert "wrong-password-1234" not in output
