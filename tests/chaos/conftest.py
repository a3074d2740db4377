"""The chaos test's backends and fleet: a three-broker Kafka cluster, a database per stateful
service on one PostgreSQL, and two replicas of every service (`make test-chaos`)."""

from __future__ import annotations

import asyncio
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from flywheel_testing.platform import in_process

from .fleet import REPO, Fleet, KafkaCluster, fleet_of

STATEFUL = ("registry", "deployer", "drift", "retrain")
BROKERS = 3


@pytest.fixture(scope="session")
async def cluster(kafka_bootstrap: str) -> KafkaCluster:
    cluster = KafkaCluster(kafka_bootstrap)
    if len(kafka_bootstrap.split(",")) != BROKERS or await cluster.brokers() != BROKERS:
        pytest.fail(
            f"the chaos test needs the {BROKERS} brokers of `infra/kafka/start.sh --cluster` "
            f"in FLYWHEEL_TEST_KAFKA_BOOTSTRAP, not {kafka_bootstrap!r}: run `make test-chaos`"
        )
    return cluster


@pytest.fixture
def run_id() -> str:
    return uuid.uuid4().hex[:6]


@pytest.fixture
def model(run_id: str) -> str:
    return f"chaos-{run_id}"


@pytest.fixture
async def databases(postgres_url: str) -> dict[str, str]:
    """An empty database of its own for each stateful service, as in production."""
    server, _, _ = postgres_url.rpartition("/")
    engine = create_async_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            for service in STATEFUL:
                await connection.execute(text(f"DROP DATABASE IF EXISTS chaos_{service} (FORCE)"))
                await connection.execute(text(f"CREATE DATABASE chaos_{service}"))
    finally:
        await engine.dispose()
    return {service: f"{server}/chaos_{service}" for service in STATEFUL}


@pytest.fixture
def chaos_dir() -> Path:
    """The replicas' data folders and logs, kept after the run for a look (the last run's
    only): `<FLYWHEEL_RUN_DIR>/chaos`."""
    folder = Path(os.environ.get("FLYWHEEL_RUN_DIR", REPO / ".run")) / "chaos"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    return folder


@pytest.fixture
async def fleet(
    cluster: KafkaCluster, databases: dict[str, str], chaos_dir: Path, run_id: str, model: str
) -> AsyncIterator[Fleet]:
    """Every replica serving; stopped (SIGTERM) at the end, and the model's routing state
    deleted (the cluster may serve other tests after this one)."""
    async with in_process(cluster.bootstrap, chaos_dir, replication_factor=BROKERS) as platform:
        fleet = fleet_of(platform, databases, chaos_dir, run_id)
        try:
            await fleet.start("registry")  # creates the topics; every other service asks it
            await platform.forget_deployments([model])
            await asyncio.gather(
                *(fleet.start(service) for service in ("deployer", "gateway", "drift", "retrain"))
            )
            yield fleet
        finally:
            await fleet.stop()
