"""`make run`'s credentials: made once under .run/, reused, and found by the CLI with no
flags against a registry that serves TLS from them and checks their tokens."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from flywheel_cli.credentials import LocalCredentials

from flywheel_common.service import Service
from flywheel_common.settings import AuthSettings, ServerTlsSettings
from flywheel_testing.platform import in_process
from flywheel_testing.tls import grpc_settings


@pytest.fixture
async def secured_registry(
    kafka_bootstrap: str, tmp_path: Path
) -> AsyncIterator[tuple[Service, LocalCredentials]]:
    """A registry as `make run` starts it: TLS from .run/tls, tokens from .run/tokens.json."""
    credentials = LocalCredentials(tmp_path / "workdir/.run")
    credentials.ensure()
    tls = ServerTlsSettings(
        cert_file=credentials.tls / "server.pem", key_file=credentials.tls / "server-key.pem"
    )
    async with in_process(kafka_bootstrap, tmp_path / "data") as platform:
        registry = await platform.registry(
            grpc=grpc_settings(port=0, tls=tls), auth=AuthSettings(tokens=credentials.tokens())
        )
        yield registry, credentials


async def flywheel(cwd: Path, registry: Service, **variables: str) -> tuple[int, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("FLYWHEEL_")}
    env |= {"FLYWHEEL_CLI_REGISTRY": registry.grpc.address, "COLUMNS": "200", **variables}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flywheel_cli",
        "models",
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, output.decode()


async def test_the_cli_finds_the_ca_and_the_admin_token_with_no_flags(
    secured_registry: tuple[Service, LocalCredentials], tmp_path: Path
) -> None:
    registry, credentials = secured_registry
    workdir = credentials.root.parent
    code, output = await flywheel(workdir, registry)
    assert code == 0, output

    code, output = await flywheel(workdir, registry, FLYWHEEL_CLI_TOKEN="not-a-token")
    assert code == 1
    assert "wants a token" in output  # the variable overrides the file

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    code, output = await flywheel(elsewhere, registry)
    assert code == 1
    assert "TLS handshake" in output
    assert "FLYWHEEL_CLI_TLS__CA_FILE" in output
