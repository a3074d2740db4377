"""Configuration of the registry service, read from FLYWHEEL_REGISTRY_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel_common.settings import (
    GrpcSettings,
    TelemetrySettings,
    WithConsumerGroup,
    WithDatabase,
)


class RegistrySettings(WithDatabase, WithConsumerGroup):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_REGISTRY_")
    database_file = "registry.db"

    service_name: str = "flywheel-registry"
    grpc: GrpcSettings = GrpcSettings(port=50051)
    telemetry: TelemetrySettings = TelemetrySettings(metrics_port=9101)
    artifact_store: Literal["local", "database"] = "local"
    """Where artifacts and reference samples live: `local`, a folder (`ARTIFACT_ROOT`), for
    one replica; `database`, chunked rows in the registry's database, which every replica
    on one PostgreSQL reads."""
    artifact_root: Path | None = None
    """Folder of the local artifact store; default: `<data_dir>/artifacts`."""
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

    def artifact_folder(self) -> Path:
        return self.artifact_root or self.data_dir / "artifacts"
