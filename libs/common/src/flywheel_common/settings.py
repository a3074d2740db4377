"""Settings base classes: every service reads its configuration from the environment here."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import ClassVar, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Role(StrEnum):
    """What a caller may do. Each role includes the ones before it."""

    READER = "reader"
    WRITER = "writer"
    ADMIN = "admin"

    def allows(self, required: Role) -> bool:
        order = list(Role)
        return order.index(self) >= order.index(required)


class SettingsSection(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid", frozen=True)


class ServerTlsSettings(SettingsSection):
    enabled: bool = True
    """Serve gRPC over TLS (the default: a service without a certificate refuses to start).
    false serves plaintext: only behind a mesh or sidecar that encrypts the traffic."""
    cert_file: Path | None = None
    """PEM certificate chain of the server (re-read when the file changes, no restart)."""
    key_file: Path | None = None
    """PEM private key of that certificate (re-read with it)."""
    client_ca_file: Path | None = None
    """PEM CA bundle that client certificates must chain to (mutual TLS)."""
    require_client_cert: bool = False
    """Mutual TLS: refuse a client without a certificate from client_ca_file."""

    @model_validator(mode="after")
    def _client_ca_for_mutual_tls(self) -> Self:
        if self.require_client_cert and self.client_ca_file is None:
            raise ValueError("require_client_cert needs client_ca_file: the CA to verify against")
        return self


class ClientTlsSettings(SettingsSection):
    enabled: bool = True
    """Call over TLS (the default). false calls in plaintext: only through a mesh or sidecar
    that encrypts the traffic."""
    ca_file: Path | None = None
    """PEM CA bundle trusted for the server's certificate; empty: gRPC's default roots."""
    cert_file: Path | None = None
    """PEM client certificate, for servers that require mutual TLS."""
    key_file: Path | None = None
    """PEM private key of the client certificate."""
    server_name: str = ""
    """Name the server's certificate must carry, when not the host of the address."""

    @model_validator(mode="after")
    def _certificate_with_key(self) -> Self:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("set both cert_file and key_file for a client certificate, or neither")
        return self


class GrpcSettings(SettingsSection):
    host: str = "127.0.0.1"
    """Address the gRPC server binds to; use 0.0.0.0 inside containers."""
    port: int = Field(default=0, ge=0, le=65535)
    """gRPC port; 0 picks a free port (the chosen port is logged)."""
    max_message_bytes: int = 64 * 1024 * 1024
    """Largest gRPC message accepted or sent, in bytes."""
    shutdown_grace_seconds: float = 10.0
    """How long SIGTERM waits for in-flight calls before cancelling them."""
    reuse_port: bool = False
    """Let several processes bind the same port (SO_REUSEPORT) and the kernel share out
    the connections: how a gateway's workers serve one port."""
    tls: ServerTlsSettings = ServerTlsSettings()
    """TLS of the gRPC port: FLYWHEEL_<SERVICE>_GRPC__TLS__CERT_FILE and so on."""


class KafkaSettings(SettingsSection):
    bootstrap_servers: str = "127.0.0.1:19092"
    """Comma-separated Kafka brokers."""
    client_id: str = ""
    """Client id sent to the broker; defaults to the service name."""
    replication_factor: int = Field(default=1, ge=1)
    """Replication factor used when this service creates Flywheel's topics."""
    provision_topics: bool = True
    """Create every Flywheel topic at start-up when it does not exist yet."""
    compression: str = "lz4"
    """Producer compression: none, gzip, snappy, lz4 or zstd."""
    linger_ms: int = Field(default=5, ge=0)
    """How long the producer waits to fill a batch before sending."""
    request_timeout_ms: int = Field(default=30_000, ge=1000)
    """How long a send may wait for the brokers before it fails."""


class AuthSettings(SettingsSection):
    tokens: dict[str, Role] = Field(default_factory=dict)
    """Bearer tokens and their roles, as JSON: {"token": "reader|writer|admin"}.
    Empty disables authentication: every caller is an anonymous admin."""


class TelemetrySettings(SettingsSection):
    otlp_endpoint: str = ""
    """OTLP/gRPC collector address (for example http://127.0.0.1:4317); empty disables export."""
    trace_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of new traces recorded (a caller's sampling decision is always followed);
    unsampled calls still get trace ids for logs, at a fraction of the cost."""
    metrics_host: str = "127.0.0.1"
    """Address of the Prometheus scrape endpoint; use 0.0.0.0 inside containers."""
    metrics_port: int = Field(default=-1, ge=-1, le=65535)
    """Prometheus scrape port; -1 disables the endpoint, 0 picks a free port."""
    log_level: str = "INFO"
    """Log level of the service's JSON logs."""
    log_json: bool = True
    """Write logs as one JSON object per line (False: plain text for people)."""


class DatabaseSettings(SettingsSection):
    url: str = ""
    """SQLAlchemy async URL; empty means a SQLite file in the data folder.
    PostgreSQL: postgresql+psycopg://user@host:5432/db."""
    echo: bool = False
    """Log every SQL statement."""


class OutboxSettings(SettingsSection):
    relay_enabled: bool = True
    """Relay the outbox from this replica when it holds the relay's lease. Replicas on one
    database take turns through the lease, so events keep their commit order; disable it
    only to keep a replica from ever relaying."""
    poll_interval_seconds: float = Field(default=1.0, gt=0)
    """How often the relay looks for events committed by other processes."""
    batch_size: int = Field(default=200, ge=1)
    """Events published per round trip."""
    retention_hours: float = Field(default=168.0, gt=0)
    """Published events are deleted from the outbox once this old (default a week)."""


class LeaseSettings(SettingsSection):
    ttl_seconds: float = Field(default=5.0, gt=0)
    """How long a lease lasts unrenewed: a standby takes over this long after its leader
    died at the latest (plus one renewal period)."""
    renew_seconds: float = Field(default=1.0, gt=0)
    """How often the holder renews its leases and a standby tries to take them."""

    @model_validator(mode="after")
    def _renewed_before_expiry(self) -> Self:
        if self.renew_seconds * 2 > self.ttl_seconds:
            raise ValueError("renew_seconds must be at most half of ttl_seconds")
        return self


class ServiceSettings(BaseSettings):
    """Settings every service shares. A service subclasses it with its own env prefix,
    for example FLYWHEEL_REGISTRY_, and nested sections use a double underscore:
    FLYWHEEL_REGISTRY_KAFKA__BOOTSTRAP_SERVERS."""

    model_config = SettingsConfigDict(
        env_prefix="FLYWHEEL_",
        env_nested_delimiter="__",
        use_attribute_docstrings=True,
        extra="ignore",
        # A service's own defaults for a section (its port, say) survive an env var that
        # sets another field of the same section.
        nested_model_default_partial_update=True,
    )

    service_name: str = "flywheel"
    """Name reported in logs, traces, metrics and CloudEvent `ce_source`."""
    instance_id: str = ""
    """Identifies this replica; defaults to host name and process id."""
    data_dir: Path = Path(".run/data")
    """Folder for embedded state: SQLite files, cached artifacts."""
    component_stop_timeout_seconds: float = 20.0
    """At shutdown, how long one component (a producer flushing, a consumer leaving its
    group) may take before it is abandoned and the next one stops: SIGTERM always ends."""
    grpc: GrpcSettings = GrpcSettings()
    kafka: KafkaSettings = KafkaSettings()
    auth: AuthSettings = AuthSettings()
    telemetry: TelemetrySettings = TelemetrySettings()

    def sqlite_url(self, file_name: str) -> str:
        """The embedded default database of a service: a SQLite file in the data folder."""
        return f"sqlite+aiosqlite:///{(self.data_dir / file_name).resolve()}"


class WithDatabase(ServiceSettings):
    """A service that keeps state in its own database and announces changes via an outbox."""

    database_file: ClassVar[str] = "service.db"
    """The embedded default's SQLite file in the data folder (each service names its own)."""
    database: DatabaseSettings = DatabaseSettings()
    outbox: OutboxSettings = OutboxSettings()
    lease: LeaseSettings = LeaseSettings()
    """Leases of the work one replica does at a time (the relay, a service's loops)."""

    def database_url(self) -> str:
        return self.database.url or self.sqlite_url(self.database_file)


class WithRegistry(ServiceSettings):
    """A service that calls the registry."""

    registry_address: str = "127.0.0.1:50051"
    """The registry's gRPC address."""
    registry_token: str = ""
    """Bearer token for the registry when it requires authentication (the reader role,
    unless the service's README says otherwise)."""
    registry_tls: ClientTlsSettings = ClientTlsSettings()
    """TLS of the calls to the registry: FLYWHEEL_<SERVICE>_REGISTRY_TLS__CA_FILE and so on."""


class WithConsumerGroup(ServiceSettings):
    """A service that follows topics in Kafka consumer groups."""

    consumer_group: str = ""
    """Kafka consumer group (or the prefix of the service's groups); default the service
    name. A new group starts at the end of its topics."""

    def group(self, suffix: str = "") -> str:
        """The consumer group of one of the service's consumers."""
        base = self.consumer_group or self.service_name
        return f"{base}.{suffix}" if suffix else base
