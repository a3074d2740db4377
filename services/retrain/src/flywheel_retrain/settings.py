"""Configuration of the retrain service, read from FLYWHEEL_RETRAIN_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel_common.settings import (
    GrpcSettings,
    SettingsSection,
    TelemetrySettings,
    WithConsumerGroup,
    WithDatabase,
    WithRegistry,
)
from flywheel_common.topics import GROUND_TRUTH, PREDICTIONS


class KubernetesSettings(SettingsSection):
    """The Kubernetes executor (FLYWHEEL_RETRAIN_KUBERNETES__*)."""

    api_url: str = "https://kubernetes.default.svc"
    namespace: str = "flywheel"
    token_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    ca_file: str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    image: str = "flywheel/training:latest"
    """Image of training Jobs unless a policy names one."""
    service_account: str = ""
    volume_claim: str = ""
    """PersistentVolumeClaim holding datasets and outputs, mounted by the trigger and every
    Job at `mount_path` (the trigger's data folder must be on it)."""
    mount_path: str = "/var/lib/flywheel"
    cpu: str = "1"
    memory: str = "2Gi"
    ttl_seconds_after_finished: int = 3600
    poll_seconds: float = Field(default=5.0, gt=0)


class RetrainSettings(WithDatabase, WithRegistry, WithConsumerGroup):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_RETRAIN_")
    database_file = "retrain.db"

    service_name: str = "flywheel-retrain"
    grpc: GrpcSettings = GrpcSettings(port=50055)
    telemetry: TelemetrySettings = TelemetrySettings(metrics_port=9105)
    registry_token: str = ""
    """Bearer token for the registry (writer role: the trigger moves `production`); also
    handed to training jobs so they can register their candidate."""
    executor: Literal["local", "kubernetes"] = "local"
    """Executor of runs whose policy does not name one."""
    kubernetes: KubernetesSettings = KubernetesSettings()
    training_workdir: Path | None = None
    """Working folder of local training jobs; default the service's own."""
    training_timeout_seconds: float = Field(default=3600.0, gt=0)
    """Time limit of one training attempt when the policy sets none."""
    max_parallel_runs: int = Field(default=4, ge=1)
    """Runs this service executes at once, across all models."""
    reconcile_interval_seconds: float = Field(default=1.0, gt=0)
    """How often queued runs and schedules are examined when nothing pokes the engine."""
    log_tail_lines: int = Field(default=50, ge=1)
    """Lines of the training log GetRun and RetrainFailed carry by default."""
    predictions_topic: str = PREDICTIONS.name
    ground_truth_topic: str = GROUND_TRUTH.name

    @property
    def runs_dir(self) -> Path:
        """Datasets, job outputs and logs of runs."""
        return self.data_dir / "retrain"
