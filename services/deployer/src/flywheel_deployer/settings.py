"""Configuration of the deployer service, read from FLYWHEEL_DEPLOYER_* environment variables."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from flywheel_common.settings import GrpcSettings, ServiceSettings, TelemetrySettings


class DeployerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_DEPLOYER_")

    service_name: str = "flywheel-deployer"
    grpc: GrpcSettings = GrpcSettings(port=50052)
    telemetry: TelemetrySettings = TelemetrySettings(metrics_port=9102)
