"""Configuration of the drift service, read from FLYWHEEL_DRIFT_* environment variables."""

from __future__ import annotations

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


class ReportSettings(SettingsSection):
    """The HTML drift reports, served over HTTPS with the gRPC port's certificate (plain
    HTTP when gRPC's TLS is off) and its bearer tokens."""

    port: int = Field(default=8054, ge=-1, le=65535)
    """Port of the reports; 0 picks a free port, -1 serves none (alerts then link none)."""
    host: str = ""
    """Address the reports bind to; empty: gRPC's host."""
    base_url: str = ""
    """Address of the reports as alerts link them, for example https://drift.example.com
    behind an ingress; empty: this server's own scheme, host and port."""


class DriftSettings(WithDatabase, WithRegistry, WithConsumerGroup):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_DRIFT_")
    database_file = "drift.db"

    service_name: str = "flywheel-drift"
    grpc: GrpcSettings = GrpcSettings(port=50054)
    telemetry: TelemetrySettings = TelemetrySettings(metrics_port=9104)
    report: ReportSettings = ReportSettings()
    """FLYWHEEL_DRIFT_REPORT__PORT, __HOST, __BASE_URL."""
    window_size: int = Field(default=1000, ge=10)
    """Predictions per window for models without a monitor config."""
    batch_size: int = Field(default=1000, ge=1)
    """Ground-truth records the stream hands to the detector at once."""
    prediction_batch_records: int = Field(default=50, ge=1)
    """Prediction records the stream hands to the detector at once. A gateway packs up to
    its `PREDICTION_LOGS_PER_RECORD` (200) logs into one record, so this bounds a batch at
    10,000 logs by default; raise it for producers that send one log per record. Each batch
    is one checkpoint transaction: at 50 records instead of 20, 15% more logs per second."""
    session_timeout_seconds: float = Field(default=10.0, ge=1)
    """Kafka session of the stream's consumer: a replica silent this long (killed, stalled)
    loses its partitions to the others. Shorter hands them over sooner, but a pause this
    long (a stalled host, a long collection) then costs a rebalance. The broker accepts
    6 s to 30 min unless its group.min/max.session.timeout.ms say otherwise."""
    late_prediction_seconds: float = Field(default=10.0, ge=0)
    """How long after a time window's end its predictions may still arrive (gateways and
    this stream send logs in batches). A window closes at its end's first newer prediction,
    or this long after its end when traffic has stopped; a prediction later still counts
    in the next window."""
    gc_first_generation: int = Field(default=50_000, ge=700)
    """Allocations between collections of Python's youngest generation (Python's default
    is 700). Reading a batch allocates and drops a protobuf wrapper per field per log; with
    the default, collections that free nothing took a quarter of the detector's time."""
    label_wait_seconds: float = Field(default=3600.0, gt=0)
    """How long a prediction waits for its ground truth (and a label for its prediction)."""
    monitor_config_refresh_seconds: float = Field(default=1.0, gt=0)
    """How often a replica reads the stored monitor configs again, so a config set through
    any replica applies on the one holding the model's partition."""
    max_alerts_kept: int = Field(default=10_000, ge=1)
    """Alerts ListAlerts can return (the newest)."""
