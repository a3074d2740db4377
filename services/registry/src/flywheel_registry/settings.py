"""Configuration of the registry service, read from FLYWHEEL_REGISTRY_* environment variables."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from flywheel_common.settings import GrpcSettings, ServiceSettings, TelemetrySettings


class RegistrySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_REGISTRY_")

    service_name: str = "flywheel-registry"
    grpc: GrpcSettings = GrpcSettings(port=50051)
    telemetry: TelemetrySettings = TelemetrySettings(metrics_port=9101)
