"""Every service runs as `python -m flywheel_<name>`: health, metrics, clean SIGTERM."""

import asyncio
import os
import signal
import sys
import urllib.request
from pathlib import Path

import pytest

from flywheel_common.healthcheck import is_serving, wait_until_serving
from flywheel_common.testing import unused_port

SERVICES = ["registry", "deployer", "gateway", "drift", "retrain"]


@pytest.mark.parametrize("name", SERVICES)
async def test_service_serves_health_and_exits_cleanly_on_sigterm(
    name: str, kafka_bootstrap: str, free_port: int, tmp_path: Path
) -> None:
    prefix = f"FLYWHEEL_{name.upper()}_"
    metrics_port = unused_port()
    env = os.environ | {
        f"{prefix}TELEMETRY__METRICS_PORT": str(metrics_port),
        f"{prefix}GRPC__PORT": str(free_port),
        f"{prefix}KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
        f"{prefix}DATA_DIR": str(tmp_path),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", f"flywheel_{name}", env=env, stderr=asyncio.subprocess.PIPE
    )
    address = f"127.0.0.1:{free_port}"
    # Drain stderr all along: a full pipe would block the service's logging.
    assert process.stderr is not None
    stderr_reader = asyncio.create_task(process.stderr.read())
    try:
        down = await wait_until_serving([address], timeout=60)
        assert not down, f"flywheel_{name} did not report SERVING"
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        scrape = await asyncio.to_thread(
            lambda: urllib.request.urlopen(metrics_url, timeout=5).read()
        )
        assert f'service_name="flywheel-{name}"'.encode() in scrape
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), 30)
        stderr = await stderr_reader
    assert process.returncode == 0, stderr.decode()[-2000:]
    assert b'"service stopped"' in stderr
    assert not await is_serving(address, timeout=0.5)
