"""A model nobody registered is NOT_FOUND for every command that names one, listings too."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator

import pytest

from flywheel_common.service import Service
from flywheel_testing.backends import unused_port
from flywheel_testing.platform import in_process
from flywheel_testing.tls import cli_tls_environment


@pytest.fixture(scope="module")
async def registry(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Service]:
    async with in_process(kafka_bootstrap, tmp_path_factory.mktemp("registry")) as platform:
        yield await platform.registry()


async def flywheel(registry: Service, *args: str) -> tuple[int, str, str]:
    """The command line in its own process (the registry serves from this test's loop)."""
    # Nothing listens at the other services' addresses: the answer comes from the registry.
    nowhere = f"127.0.0.1:{unused_port()}"
    env = os.environ | {
        "FLYWHEEL_CLI_REGISTRY": registry.grpc.address,
        "FLYWHEEL_CLI_DEPLOYER": nowhere,
        "FLYWHEEL_CLI_DRIFT": nowhere,
        "FLYWHEEL_CLI_RETRAIN": nowhere,
        "COLUMNS": "200",
        **cli_tls_environment(),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "flywheel_cli",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, stdout.decode(), stderr.decode()


@pytest.mark.parametrize(
    "args",
    [
        ["alerts", "--model", "no-such-model"],
        ["rollouts", "no-such-model"],
        ["retrain", "runs", "no-such-model"],
    ],
)
async def test_listings_of_an_unknown_model_fail_as_other_commands_do(
    registry: Service, args: list[str]
) -> None:
    (code, _, reference), listing = await asyncio.gather(
        flywheel(registry, "versions", "no-such-model"), flywheel(registry, *args)
    )
    assert code == 1
    assert "model 'no-such-model' does not exist" in reference
    assert "(not_found)" in reference

    assert listing == (1, "", reference)
