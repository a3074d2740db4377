"""gRPC transport of the drift detector: statuses, alerts and monitor configs."""

from __future__ import annotations

from typing import Any

from flywheel.drift.v1 import drift_pb2 as pb
from flywheel.drift.v1 import drift_pb2_grpc as pb_grpc
from flywheel_common.errors import InvalidArgument, NotFound, required
from flywheel_common.settings import Role
from flywheel_drift import converters
from flywheel_drift.handlers import Detector
from flywheel_drift.monitors import MonitorConfigs

SERVICE_NAME = "flywheel.drift.v1.DriftService"
METHOD_ROLES: dict[str, Role] = {}
MAX_PAGE_SIZE = 500


class DriftServicer(pb_grpc.DriftServiceServicer):
    def __init__(self, detector: Detector, configs: MonitorConfigs) -> None:
        self._detector = detector
        self._configs = configs

    async def GetDriftStatus(
        self, request: pb.GetDriftStatusRequest, context: Any
    ) -> pb.GetDriftStatusResponse:
        statuses = self._detector.statuses(required(request.model, "model"), request.version)
        if not statuses:
            raise NotFound(
                f"no predictions of {request.model!r}"
                + (f" version {request.version}" if request.version else "")
                + " have been seen yet"
            )
        return pb.GetDriftStatusResponse(versions=[converters.status_message(s) for s in statuses])

    async def ListAlerts(
        self, request: pb.ListAlertsRequest, context: Any
    ) -> pb.ListAlertsResponse:
        if request.page_size < 0:
            raise InvalidArgument("page_size cannot be negative")
        size = min(request.page_size or 100, MAX_PAGE_SIZE)
        try:
            offset = int(request.page_token) if request.page_token else 0
        except ValueError:
            raise InvalidArgument("page_token is not one this server issued") from None
        timed = request.HasField("time_range")
        least_severity = converters.least_severity_of(request.min_severity)
        kinds = {converters.kind_of(number) for number in request.kinds}
        matching = (
            self._detector.find_alerts(
                model=request.model,
                version=request.version,
                kinds={kind for kind in kinds if kind is not None} if request.kinds else None,
                min_severity=least_severity,
                start=request.time_range.start.ToNanoseconds() / 1e9 if timed else 0.0,
                end=request.time_range.end.ToNanoseconds() / 1e9 if timed else 0.0,
            )
            if least_severity is not None
            else []
        )
        page = matching[offset : offset + size]
        token = str(offset + size) if offset + size < len(matching) else ""
        return pb.ListAlertsResponse(
            alerts=[converters.alert_message(alert) for alert in page], next_page_token=token
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
