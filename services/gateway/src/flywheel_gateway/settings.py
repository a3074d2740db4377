"""Configuration of the gateway, read from FLYWHEEL_GATEWAY_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flywheel_common.settings import (
    GrpcSettings,
    SettingsSection,
    TelemetrySettings,
    WithRegistry,
)
from flywheel_gateway.tensors import NonFinitePolicy


class HttpSettings(SettingsSection):
    """The KServe V2 REST API beside gRPC: the same models, checks, logs and tokens, over
    HTTPS with the gRPC port's certificate (plain HTTP when gRPC's TLS is off)."""

    port: int = Field(default=8000, ge=-1, le=65535)
    """Port of the REST API (Triton's and KServe's HTTP port); 0 picks a free port, -1
    serves none."""
    host: str = ""
    """Address the REST API binds to; empty: gRPC's host."""


class GatewaySettings(WithRegistry):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_GATEWAY_")

    service_name: str = "flywheel-gateway"
    grpc: GrpcSettings = GrpcSettings(port=8001)
    http: HttpSettings = HttpSettings()
    """FLYWHEEL_GATEWAY_HTTP__PORT, __HOST. Requests as large as gRPC's
    max_message_bytes are accepted; workers share the port as they share gRPC's."""
    telemetry: TelemetrySettings = TelemetrySettings(metrics_port=9103)
    gateway_id: str = ""
    """Identifies this replica on flywheel.gateway-status; defaults to the instance id."""
    cache_dir: Path | None = None
    """Local artifact cache; default `<data_dir>/artifacts`."""
    execution_provider: str = Field(default="auto", pattern="^(auto|cuda|cpu)$")
    """onnxruntime provider: auto (CUDA when the machine has an NVIDIA GPU), cuda or cpu."""
    intra_op_threads: int = Field(default=0, ge=0)
    """onnxruntime threads within an operator; 0 lets onnxruntime decide."""
    inter_op_threads: int = Field(default=0, ge=0)
    """onnxruntime threads across operators; 0 lets onnxruntime decide."""
    thread_spinning: bool = False
    """Let onnxruntime's idle threads spin for the next operator instead of sleeping. It
    shaves microseconds off a run on a machine with cores to spare; off by default because
    a spinning thread takes the core that the event loop (decoding, batching, answering
    requests) needs between runs."""
    max_batch_size: int = Field(default=32, ge=1)
    """Largest batch the dynamic batcher forms (1 turns batching off)."""
    max_request_batch: int = Field(default=256, ge=1)
    """Largest batch one request may send."""
    max_queue_delay_ms: float = Field(default=2.0, ge=0)
    """How long a request may wait for others to batch with."""
    preferred_batch_sizes: list[int] = Field(default_factory=list)
    """Batch sizes dispatched at once without waiting out the delay."""
    non_finite_inputs: NonFinitePolicy = NonFinitePolicy.REJECT
    """NaN/Inf in inputs: reject (INVALID_ARGUMENT) or flag in the prediction log."""
    log_predictions: bool = True
    """Publish a PredictionLog per request to flywheel.predictions (packed per model into
    PredictionLogBatch records)."""
    prediction_sample_rate: float = Field(default=1.0, gt=0, le=1)
    """Share of requests logged."""
    prediction_linger_ms: int = Field(default=50, ge=0)
    """How long the producer of prediction logs gathers records before a produce request:
    logs are not latency-critical, and fuller requests cost the gateway and the brokers
    less CPU per record."""
    prediction_logs_per_record: int = Field(default=200, ge=1)
    """Most prediction logs packed into one Kafka record: each record costs producers and
    consumers the same whatever it carries, so fuller records log more for less CPU."""
    prediction_buffer: int = Field(default=10_000, ge=1)
    """Most prediction logs the shipper reads from the journal and sends at once."""
    prediction_journal_bytes: int = Field(default=1024 * 1024 * 1024, ge=1024)
    """Disk journal (the spool) of the prediction logs Kafka has not acknowledged yet (every
    log is written to it before its request is answered); when full, logs are shed: their
    requests are answered, the logs counted in
    `flywheel.predictions.dropped{reason="journal_full"}`."""
    prediction_journal_fsync_interval_ms: int = Field(default=1000, ge=0)
    """How often the journal is flushed to the disk (fsync). A log is in the page cache
    before its request is answered, so a killed process loses none; a machine crash loses
    the logs of at most this interval. 0 flushes before every answer (one flush for all the
    logs written meanwhile), at a cost per request the gateway benchmark measures."""
    heartbeat_seconds: float = Field(default=5.0, gt=0)
    """Interval of GatewayStatus heartbeats."""

    workers: int = Field(default=1, ge=1)
    """Serving processes behind the one gRPC port (SO_REUSEPORT), each a full replica with
    its own routing, models and prediction logger; use one per core."""
    worker_index: int = Field(default=0, ge=0)
    """Set by the gateway for each of its workers; not for operators."""

    def spool_path(self) -> Path:
        """The prediction logs' spool (`spool`), one per worker, beside where each worker
        kept the journal of earlier releases."""
        return self.journal_path().with_name("spool")

    def journal_path(self) -> Path:
        """Each worker journals to a file of its own (earlier releases: the shipper sends
        what such a journal still holds, then deletes it)."""
        folder = self.data_dir / "journal"
        if self.worker_index:
            folder = folder / f"worker-{self.worker_index}"
        return folder / "predictions.journal"

    def artifact_cache(self) -> Path:
        return self.cache_dir or self.data_dir / "artifacts"
