"""Who holds a service's leader lease, read from its database as the replicas see it."""

from __future__ import annotations

from flywheel_common.db import Database
from flywheel_common.foundation import LEADER_LEASE
from flywheel_common.leases import LeaseRow


async def lease_holder(url: str, name: str = LEADER_LEASE) -> tuple[str, int] | None:
    """(holder, fencing token) of the lease `name`, or None before anyone took it."""
    database = Database(url)
    try:
        async with database.transaction() as session:
            row = await session.get(LeaseRow, name)
            return None if row is None else (row.holder, row.token)
    finally:
        await database.stop()
