"""Runs one outbox relay pass that is SIGKILLed right after Kafka acknowledged the batch,
before the rows are marked published: the crash the outbox must survive.

Usage: python relay_then_die.py DATABASE_URL BOOTSTRAP_SERVERS
"""

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from flywheel_common.db import Database
from flywheel_common.events import OutgoingRecord
from flywheel_common.outbox import Outbox, OutboxRelay
from flywheel_common.publisher import EventPublisher
from flywheel_common.settings import KafkaSettings


class DiesAfterSend(EventPublisher):
    async def send(self, records: Sequence[OutgoingRecord]) -> None:
        await super().send(records)
        os.kill(os.getpid(), signal.SIGKILL)


async def main(database_url: str, bootstrap: str) -> None:
    database = Database(database_url)
    publisher = DiesAfterSend(KafkaSettings(bootstrap_servers=bootstrap), source="relay-test")
    await publisher.start()
    await OutboxRelay(database, Outbox("relay-test"), publisher).relay_once()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
