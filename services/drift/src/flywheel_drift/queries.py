"""What every replica answers over gRPC about drift: read from the database all replicas
checkpoint into, so the answer does not depend on which replica holds the model's
partition. A status is as fresh as its partition's last checkpoint (a batch, or a second)."""

from __future__ import annotations

from flywheel.drift.v1 import drift_pb2 as api
from flywheel.drift.v1 import events_pb2 as events
from flywheel_common.db import Database
from flywheel_drift import storage
from flywheel_drift.storage import AlertFilter


class DriftQueries:
    def __init__(self, database: Database) -> None:
        self._database = database

    async def statuses(self, model: str, version: int = 0) -> list[api.VersionDriftStatus]:
        """The model's versions (`version` only, when not 0), lowest first."""
        async with self._database.transaction() as session:
            found = await storage.statuses(session, model, version)
        return [api.VersionDriftStatus.FromString(status) for status in found]

    async def alerts(
        self, matching: AlertFilter, offset: int, limit: int
    ) -> tuple[list[events.DriftAlert], bool]:
        """A page of the kept alerts that match, newest first, and whether more follow."""
        async with self._database.transaction() as session:
            page, more = await storage.alerts(session, matching, offset, limit)
        return [events.DriftAlert.FromString(alert) for alert in page], more
