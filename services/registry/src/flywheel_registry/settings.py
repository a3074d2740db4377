"""Configuration of the registry service, read from FLYWHEEL_REGISTRY_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel_common.settings import (
    DatabaseSettings,
    GrpcSettings,
    OutboxSettings,
    ServiceSettings,
    TelemetrySettings,
)


class RegistrySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_REGISTRY_")

    service_name: str = "flywheel-registry"
    grpc: GrpcSettings = GrpcSettings(port=50051)
    telemetry: TelemetrySettings = TelemetrySettings(metrics_port=9101)
    database: DatabaseSettings = DatabaseSettings()
    outbox: OutboxSettings = OutboxSettings()
    consumer_group: str = ""
    """Kafka consumer group following flywheel.deployment-events; default: the service name."""
    artifact_root: Path | None = None
    """Folder of the content-addressed artifact store; default: `<data_dir>/artifacts`."""
    max_artifact_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    """Largest ONNX artifact accepted; larger uploads fail with RESOURCE_EXHAUSTED."""
    max_reference_sample_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    """Largest reference sample accepted."""
    validation_timeout_seconds: float = Field(default=60.0, gt=0)
    """Time limit for checking and loading an uploaded model in onnxruntime."""
    protected_aliases: list[str] = Field(default_factory=list)
    """Aliases created protected (only the admin role moves them), e.g. ["production"]."""
    download_chunk_bytes: int = Field(default=1024 * 1024, ge=1024, le=16 * 1024 * 1024)
    """Chunk size of GetArtifact and GetReferenceSample streams."""

    def database_url(self) -> str:
        return self.database.url or self.sqlite_url("registry.db")

    def artifact_folder(self) -> Path:
        return self.artifact_root or self.data_dir / "artifacts"
