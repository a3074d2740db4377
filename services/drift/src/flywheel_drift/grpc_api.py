"""gRPC transport of the drift detector: statuses, alerts and monitor configs."""

from __future__ import annotations

from typing import Any

from flywheel.drift.v1 import drift_pb2 as pb
from flywheel.drift.v1 import drift_pb2_grpc as pb_grpc
from flywheel_common.auth import require_role, visible
from flywheel_common.errors import InvalidArgument, NotFound, required
from flywheel_common.grpc_server import Scope, Unscoped, model_field
from flywheel_common.settings import Role
from flywheel_common.timestamps import epoch_seconds_of
from flywheel_drift import converters
from flywheel_drift.monitors import MonitorConfigs
from flywheel_drift.queries import DriftQueries
from flywheel_drift.storage import AlertFilter

SERVICE_NAME = "flywheel.drift.v1.DriftService"
METHOD_ROLES: dict[str, Role] = {}
# The role is needed on the model the request names; ListAlerts over every model answers
# with the caller's models only.
METHOD_SCOPES: dict[str, Scope] = {
    "GetDriftStatus": model_field("model"),
    "ListAlerts": Unscoped.FILTERED,
    "SetMonitorConfig": model_field("config.model"),
    "GetMonitorConfig": model_field("model"),
}
MAX_PAGE_SIZE = 500


class DriftServicer(pb_grpc.DriftServiceServicer):
    def __init__(self, queries: DriftQueries, configs: MonitorConfigs) -> None:
        self._queries = queries
        self._configs = configs

    async def GetDriftStatus(
        self, request: pb.GetDriftStatusRequest, context: Any
    ) -> pb.GetDriftStatusResponse:
        statuses = await self._queries.statuses(required(request.model, "model"), request.version)
        if not statuses:
            raise NotFound(
                f"no predictions of {request.model!r}"
                + (f" version {request.version}" if request.version else "")
                + " have been seen yet"
            )
        return pb.GetDriftStatusResponse(versions=statuses)

    async def ListAlerts(
        self, request: pb.ListAlertsRequest, context: Any
    ) -> pb.ListAlertsResponse:
        if request.page_size < 0:
            raise InvalidArgument("page_size cannot be negative")
        size = min(request.page_size or 100, MAX_PAGE_SIZE)
        try:
            offset = int(request.page_token) if request.page_token else 0
        except ValueError:
            offset = -1
        if not 0 <= offset < 2**31:
            raise InvalidArgument("page_token is not one this server issued")
        if request.model:
            require_role(Role.READER, request.model)
        least_severity = converters.least_severity_of(request.min_severity)
        if least_severity is None:
            return pb.ListAlertsResponse()
        timed = request.HasField("time_range")
        kinds = {converters.kind_of(number) for number in request.kinds}
        matching = AlertFilter(
            model=request.model,
            version=request.version,
            kinds=frozenset(kind for kind in kinds if kind is not None) if request.kinds else None,
            min_severity=least_severity,
            start=(
                epoch_seconds_of(request.time_range.start, "time_range.start") if timed else 0.0
            ),
            end=epoch_seconds_of(request.time_range.end, "time_range.end") if timed else 0.0,
        )
        page, more = await self._queries.alerts(matching, offset, size)
        return pb.ListAlertsResponse(
            alerts=visible(page, lambda alert: alert.model),
            next_page_token=str(offset + size) if more else "",
        )

    async def SetMonitorConfig(
        self, request: pb.SetMonitorConfigRequest, context: Any
    ) -> pb.SetMonitorConfigResponse:
        expected = request.expected_revision if request.HasField("expected_revision") else None
        return pb.SetMonitorConfigResponse(config=await self._configs.set(request.config, expected))

    async def GetMonitorConfig(
        self, request: pb.GetMonitorConfigRequest, context: Any
    ) -> pb.GetMonitorConfigResponse:
        config, is_default = self._configs.get(required(request.model, "model"))
        return pb.GetMonitorConfigResponse(config=config, is_default=is_default)
