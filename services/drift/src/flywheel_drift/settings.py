"""Configuration of the drift service, read from FLYWHEEL_DRIFT_* environment variables."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from flywheel_common.settings import GrpcSettings, ServiceSettings, TelemetrySettings


class DriftSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_DRIFT_")

    service_name: str = "flywheel-drift"
    grpc: GrpcSettings = GrpcSettings(port=50054)
    telemetry: TelemetrySettings = TelemetrySettings(metrics_port=9104)
