"""Configuration of the deployer service, read from FLYWHEEL_DEPLOYER_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel_common.settings import (
    DatabaseSettings,
    GrpcSettings,
    OutboxSettings,
    ServiceSettings,
    TelemetrySettings,
)


class DeployerSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_DEPLOYER_")

    service_name: str = "flywheel-deployer"
    grpc: GrpcSettings = GrpcSettings(port=50052)
    telemetry: TelemetrySettings = TelemetrySettings(metrics_port=9102)
    database: DatabaseSettings = DatabaseSettings()
    outbox: OutboxSettings = OutboxSettings()
    registry_address: str = "127.0.0.1:50051"
    """The registry, asked whether a version exists and may take traffic."""
    registry_token: str = ""
    """Bearer token for the registry when it requires authentication (reader role)."""
    gateway_heartbeat_timeout_seconds: float = Field(default=15.0, gt=0)
    """A gateway silent for this long (or three of its heartbeat intervals, if longer) no
    longer holds rollouts back."""
    reconcile_interval_seconds: float = Field(default=0.5, gt=0)
    """How often running rollouts are re-examined when nothing pokes the engine sooner."""
    consumer_group: str = ""
    """Kafka consumer group for promotions and metric windows; default the service name."""

    def database_url(self) -> str:
        return self.database.url or self.sqlite_url("deployer.db")
