"""Configuration of the retrain service, read from FLYWHEEL_RETRAIN_* environment variables."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from flywheel_common.settings import GrpcSettings, ServiceSettings, TelemetrySettings


class RetrainSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_RETRAIN_")

    service_name: str = "flywheel-retrain"
    grpc: GrpcSettings = GrpcSettings(port=50055)
    telemetry: TelemetrySettings = TelemetrySettings(metrics_port=9105)
