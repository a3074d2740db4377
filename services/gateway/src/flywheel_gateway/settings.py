"""Configuration of the gateway service, read from FLYWHEEL_GATEWAY_* environment variables."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from flywheel_common.settings import GrpcSettings, ServiceSettings, TelemetrySettings


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_GATEWAY_")

    service_name: str = "flywheel-gateway"
    grpc: GrpcSettings = GrpcSettings(port=8001)
    telemetry: TelemetrySettings = TelemetrySettings(metrics_port=9103)
