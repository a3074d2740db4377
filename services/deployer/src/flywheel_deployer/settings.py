"""Configuration of the deployer service, read from FLYWHEEL_DEPLOYER_* environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel_common.settings import (
    GrpcSettings,
    TelemetrySettings,
    WithConsumerGroup,
    WithDatabase,
    WithRegistry,
)


class DeployerSettings(WithDatabase, WithRegistry, WithConsumerGroup):
    """`consumer_group` is the prefix of the groups `<group>.promotions` and
    `<group>.metrics`."""

    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_DEPLOYER_")
    database_file = "deployer.db"

    service_name: str = "flywheel-deployer"
    grpc: GrpcSettings = GrpcSettings(port=50052)
    telemetry: TelemetrySettings = TelemetrySettings(metrics_port=9102)
    gateway_heartbeat_timeout_seconds: float = Field(default=15.0, gt=0)
    """A gateway silent for this long (or three of its heartbeat intervals, if longer) no
    longer holds rollouts back."""
    reconcile_interval_seconds: float = Field(default=0.5, gt=0)
    """How often running rollouts are re-examined when nothing pokes the engine sooner."""
