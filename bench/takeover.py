"""Leader takeover after `kill -9`, beside Kafka's consumer-group rebalance in the same kills.

A child process holds the leader lease (the services' default lease settings) and is a
member of a consumer group (aiokafka's default session timeout, as the services use). The
benchmark process stands by with both: a lease it keeps trying to take and a consumer in
the same group. Each round kills the child with SIGKILL and times how long the standby takes
to hold the lease, and to be assigned every partition. Needs PostgreSQL and Kafka
(`make bench-takeover` starts them).

    uv run python bench/takeover.py [--kills 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import statistics
import sys
import time
import uuid

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from flywheel_common.db import Database
from flywheel_common.leases import Lease
from flywheel_common.settings import LeaseSettings
from flywheel_testing.backends import kafka_address, postgres_url, reset_postgres
from flywheel_testing.kafka import client_options

PARTITIONS = 4
LEASE = LeaseSettings()


async def member(bootstrap: str, topic: str, group: str) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(topic, **client_options(bootstrap), group_id=group)
    await consumer.start()
    return consumer


async def assigned_all(consumer: AIOKafkaConsumer) -> None:
    while len(consumer.assignment()) < PARTITIONS:
        with contextlib.suppress(Exception):
            await consumer.getmany(timeout_ms=50)


async def child(url: str, bootstrap: str, topic: str, group: str) -> None:
    """Hold the lease and belong to the group until killed."""
    database = Database(url)
    lease = Lease(database, "leader", "child", LEASE)
    await lease.start()
    consumer = await member(bootstrap, topic, group)
    await lease.wait_held()
    await assigned_all(consumer)
    print("ready", flush=True)
    while True:
        await consumer.getmany(timeout_ms=200)


async def one_kill(url: str, bootstrap: str, topic: str, group: str) -> tuple[float, float]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--child",
        url,
        bootstrap,
        topic,
        group,
        stdout=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    assert (await process.stdout.readline()).strip() == b"ready"
    database = Database(url)
    standby = Lease(database, "leader", "standby", LEASE)
    await standby.start()
    consumer = await member(bootstrap, topic, group)
    assert not standby.held
    await asyncio.sleep(2.0)  # the group has settled with two members
    process.send_signal(signal.SIGKILL)
    await process.wait()
    killed = time.monotonic()

    async def lease_taken() -> float:
        await standby.wait_held()
        return time.monotonic() - killed

    async def partitions_taken() -> float:
        await assigned_all(consumer)
        return time.monotonic() - killed

    lease_seconds, kafka_seconds = await asyncio.gather(lease_taken(), partitions_taken())
    await consumer.stop()
    await standby.stop()  # released: the next child leads at once
    await database.stop()
    return lease_seconds, kafka_seconds


def quantile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1]


async def main(kills: int) -> None:
    url, bootstrap = postgres_url(), kafka_address()
    await reset_postgres(url)
    database = Database(url)
    await database.create_schema()
    await database.stop()
    topic = f"bench-takeover-{uuid.uuid4().hex[:6]}"
    admin = AIOKafkaAdminClient(**client_options(bootstrap))
    await admin.start()
    await admin.create_topics([NewTopic(topic, PARTITIONS, 1)])
    await admin.close()
    leases: list[float] = []
    rebalances: list[float] = []
    for round_number in range(1, kills + 1):
        group = f"bench-takeover-{uuid.uuid4().hex[:6]}"
        lease_seconds, kafka_seconds = await one_kill(url, bootstrap, topic, group)
        leases.append(lease_seconds)
        rebalances.append(kafka_seconds)
        print(f"kill {round_number:2}: lease {lease_seconds:5.2f} s, group {kafka_seconds:5.2f} s")
    rows = [
        (f"leader lease (ttl {LEASE.ttl_seconds:g} s, renew {LEASE.renew_seconds:g} s)", leases),
        ("Kafka group rebalance (aiokafka defaults)", rebalances),
    ]
    print(f"\n{'takeover after kill -9, ' + str(kills) + ' kills':<44}{'p50 s':>8}{'p99 s':>8}")
    for label, values in rows:
        print(f"{label:<44}{quantile(values, 0.5):8.2f}{quantile(values, 0.99):8.2f}")
    ratio = quantile(leases, 0.5) / quantile(rebalances, 0.5)
    print(f"{'lease / rebalance, p50':<44}{ratio:7.2f}x")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        asyncio.run(child(*sys.argv[2:6]))
    else:
        parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
        parser.add_argument("--kills", type=int, default=20)
        asyncio.run(main(parser.parse_args().kills))
