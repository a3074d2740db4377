"""Settings base classes: every service reads its configuration from the environment here."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import ClassVar, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from flywheel_common.event_loop import EventLoop


class Role(StrEnum):
    """What a caller may do. Each role includes the ones before it."""

    READER = "reader"
    WRITER = "writer"
    ADMIN = "admin"

    def rank(self) -> int:
        return _RANKS[self]

    def allows(self, required: Role) -> bool:
        return _RANKS[self] >= _RANKS[required]


_RANKS = {role: rank for rank, role in enumerate(Role)}

ALL_MODELS = "*"
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


def check_model_pattern(pattern: str) -> str:
    """A model name pattern: an exact name, a prefix ending in `*`, or `*` alone."""
    if not pattern or "*" in pattern[:-1]:
        raise ValueError(
            f"model pattern {pattern!r} must be a model name, a prefix ending in '*' "
            "(fraud-*), or '*' for every model"
        )
    return pattern


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


class KafkaSecurity(SettingsSection):
    """How a client proves who it is to the brokers and checks who they are."""

    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    """PLAINTEXT, SSL (TLS), SASL_PLAINTEXT (SASL without TLS) or SASL_SSL (both)."""
    sasl_mechanism: Literal["SCRAM-SHA-512", "PLAIN"] = "SCRAM-SHA-512"
    """SASL mechanism of the SASL protocols: SCRAM-SHA-512, or PLAIN (only over SSL)."""
    sasl_username: str = ""
    """SASL user name; required by the SASL protocols."""
    sasl_password: SecretStr = SecretStr("")
    """SASL password; required by the SASL protocols. Never logged."""
    ssl_cafile: Path | None = None
    """PEM bundle of the CAs that signed the brokers' certificates; empty: the system's."""
    ssl_certfile: Path | None = None
    """PEM client certificate (chain), for brokers that require TLS client authentication."""
    ssl_keyfile: Path | None = None
    """PEM private key of `ssl_certfile`."""
    ssl_key_password: SecretStr = SecretStr("")
    """Password of an encrypted `ssl_keyfile`. Never logged."""
    ssl_check_hostname: bool = True
    """Check that a broker's certificate names the host the client connected to."""

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol.endswith("SSL")

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.uses_sasl and not (self.sasl_username and self.sasl_password.get_secret_value()):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and sasl_password"
            )
        if self.sasl_mechanism == "PLAIN" and self.security_protocol == "SASL_PLAINTEXT":
            raise ValueError("SASL PLAIN sends the password as is: use it with SASL_SSL only")
        if (self.ssl_certfile is None) != (self.ssl_keyfile is None):
            raise ValueError("ssl_certfile and ssl_keyfile go together: set both or neither")
        if not self.uses_ssl and (self.ssl_cafile or self.ssl_certfile):
            raise ValueError(
                f"ssl_* files are set but security_protocol {self.security_protocol} has no TLS: "
                "use SSL or SASL_SSL"
            )
        return self


class KafkaSettings(KafkaSecurity):
    bootstrap_servers: str = "127.0.0.1:19092"
    """Comma-separated Kafka brokers."""
    client_id: str = ""
    """Client id sent to the broker; defaults to the service name."""
    replication_factor: int = Field(default=1, ge=1)
    """Replication factor used when this service creates Flywheel's topics."""
    provision_topics: bool = True
    """Create every Flywheel topic at start-up when it does not exist yet."""
    topic_retention_ms: dict[str, int] = Field(default_factory=dict)
    """Retention of the topics this service creates, by name, in milliseconds (-1: forever),
    as JSON: {"flywheel.predictions": 259200000}; the others keep their defaults (README,
    Topics). Topics that exist keep their configuration."""
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = "zstd"
    """Producer compression. zstd by default: aiokafka compresses lz4 at its high-compression
    level 9, which costs three times zstd's CPU for a smaller gain (bench/compression.py)."""
    linger_ms: int = Field(default=5, ge=0)
    """How long the producer waits to fill a batch before sending."""
    request_timeout_ms: int = Field(default=30_000, ge=1000)
    """How long a send may wait for the brokers before it fails."""


class StaticToken(SettingsSection):
    """A static bearer token's identity: a role on some models."""

    role: Role
    """reader, writer or admin."""
    models: list[str] = Field(default_factory=lambda: [ALL_MODELS], min_length=1)
    """Model name patterns the role applies to: names, prefixes ending in `*`, or `*`."""
    subject: str = ""
    """Name of the caller in logs and audit fields; default the role and a digest prefix."""

    @field_validator("models")
    @classmethod
    def _patterns(cls, models: list[str]) -> list[str]:
        return [check_model_pattern(pattern) for pattern in models]


class JwtSettings(SettingsSection):
    """Bearer JWTs from an OIDC provider, verified against its published keys (JWKS)."""

    jwks_url: str = ""
    """https URL of the provider's JWKS (for example .../protocol/openid-connect/certs).
    Setting it or `jwks_file` turns JWT authentication on."""
    jwks_file: str = ""
    """Path of a JWKS JSON file, instead of a URL (re-read on an unknown key id)."""
    issuer: str = ""
    """Required `iss` claim: the provider's issuer URL."""
    audience: str = ""
    """Required `aud` claim: the audience the provider puts in tokens for Flywheel."""
    algorithms: list[str] = Field(default_factory=lambda: ["RS256", "ES256"], min_length=1)
    """Signature algorithms accepted; asymmetric only (RS*, PS*, ES*, EdDSA): never `none`
    or HS*, which a public key could forge."""
    leeway_seconds: float = Field(default=30.0, ge=0, le=300)
    """Clock skew tolerated on `exp`, `nbf` and `iat`."""
    subject_claim: str = "sub"
    """Claim naming the caller in logs and audit fields."""
    roles_claim: str = "roles"
    """Claim carrying the grants, a dotted path for nested claims (realm_access.roles); a
    list of strings or one space-separated string. A value is `role` (on every model),
    `role:pattern` (writer:fraud-*), or a key of `grants_by_claim_value`."""
    grants_by_claim_value: dict[str, list[str]] = Field(default_factory=dict)
    """Grants of claim values such as group names, as JSON:
    {"team-fraud": ["writer:fraud-*", "reader:*"]}."""
    jwks_cache_seconds: float = Field(default=300.0, gt=0)
    """How long fetched keys are used before the JWKS is read again."""
    jwks_refresh_cooldown_seconds: float = Field(default=30.0, ge=0)
    """At most one extra JWKS read per this period for tokens naming an unknown key id, so
    forged key ids cannot make the service hammer the provider."""
    jwks_timeout_seconds: float = Field(default=5.0, gt=0)
    """Timeout of one JWKS request."""
    verified_cache_size: int = Field(default=10_000, ge=0)
    """Verified tokens remembered (until they expire) so a client reusing its token pays
    the signature check once; 0 disables the cache."""

    @property
    def enabled(self) -> bool:
        return bool(self.jwks_url or self.jwks_file)

    @field_validator("algorithms")
    @classmethod
    def _asymmetric(cls, algorithms: list[str]) -> list[str]:
        refused = sorted(set(algorithms) - ASYMMETRIC_ALGORITHMS)
        if refused:
            raise ValueError(
                f"algorithms {refused} are not accepted; use asymmetric ones: "
                f"{sorted(ASYMMETRIC_ALGORITHMS)}"
            )
        return algorithms

    @model_validator(mode="after")
    def _complete(self) -> Self:
        if self.jwks_url and self.jwks_file:
            raise ValueError("set jwt.jwks_url or jwt.jwks_file, not both")
        if self.enabled and not (self.issuer and self.audience):
            raise ValueError("JWT authentication needs jwt.issuer and jwt.audience")
        for grants in self.grants_by_claim_value.values():
            for grant in grants:
                role, colon, pattern = grant.partition(":")
                Role(role.strip())
                check_model_pattern(pattern.strip() if colon else ALL_MODELS)
        return self


_IDENTITY: TypeAdapter[Role | StaticToken] = TypeAdapter(Role | StaticToken)


def read_tokens_file(path: str) -> dict[str, Role | StaticToken]:
    """The tokens of a tokens file; errors name entries by position, never by token."""
    text = read_secret_file(path, "auth.tokens_file")
    problem = 'must be a JSON object of tokens like {"s3cr3t": "reader"}'
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(f"auth.tokens_file {problem}: {error.msg}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"auth.tokens_file {problem}")
    tokens: dict[str, Role | StaticToken] = {}
    for position, (token, identity) in enumerate(raw.items(), start=1):
        try:
            tokens[token] = _IDENTITY.validate_python(identity)
        except ValidationError:
            raise ValueError(
                f"auth.tokens_file: entry {position} is neither a role (reader, writer, admin) "
                'nor {"role": ..., "models": [...], "subject": ...}'
            ) from None
    return tokens


def read_secret_file(path: str, setting: str) -> str:
    """A secret mounted as a file (a Kubernetes or compose secret), stripped of the newline
    editors add; a ValueError naming the setting when it cannot be read."""
    try:
        return Path(path).read_text().strip()
    except OSError as error:
        raise ValueError(f"{setting} {path} cannot be read: {error.strerror}") from error


class AuthSettings(SettingsSection):
    tokens: dict[str, Role | StaticToken] = Field(default_factory=dict)
    """Static bearer tokens, as JSON: {"token": "reader|writer|admin"} (the role on every
    model) or {"token": {"role": "writer", "models": ["fraud-*"], "subject": "fraud-ci"}}."""
    jwt: JwtSettings = JwtSettings()
    """Bearer JWTs from an OIDC provider (off unless jwt.jwks_url or jwt.jwks_file is set)."""
    tokens_file: str = ""
    """A JSON file of tokens in the format of `tokens` (a mounted secret), beside them; read
    again when it changes, so tokens rotate with no restart."""
    allow_anonymous: bool = False
    """For local experiments only: with no tokens and no JWT settings, every caller is an
    anonymous admin. Without it, a service with no identities configured refuses to start."""

    @property
    def has_identities(self) -> bool:
        return bool(self.tokens or self.tokens_file) or self.jwt.enabled

    def all_tokens(self) -> dict[str, Role | StaticToken]:
        """The tokens of the file as it is now, and those of `tokens`."""
        return (read_tokens_file(self.tokens_file) if self.tokens_file else {}) | self.tokens

    @model_validator(mode="after")
    def _tokens_file_is_valid(self) -> Self:
        if self.tokens_file:  # a service must not start on a file it cannot use
            read_tokens_file(self.tokens_file)
        return self

    @model_validator(mode="after")
    def _not_both(self) -> Self:
        if self.allow_anonymous and self.has_identities:
            raise ValueError(
                "auth.allow_anonymous cannot be combined with auth.tokens or auth.jwt: "
                "drop it, callers then authenticate"
            )
        return self


class TelemetrySettings(SettingsSection):
    otlp_endpoint: str = ""
    """OTLP/gRPC collector address (for example http://127.0.0.1:4317); empty disables export."""
    trace_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of new traces recorded (a caller's sampling decision is always followed), once
    spans are exported (`otlp_endpoint`): with no exporter none is recorded. Unsampled calls
    still get trace ids for logs and events, at a fraction of the cost."""
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
    event_loop: EventLoop = EventLoop.UVLOOP
    """The asyncio event loop the service (and the gateway's shipper) runs on: `uvloop`, or
    `asyncio` for the standard library's own."""
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
    registry_token_file: str = ""
    """A file holding `registry_token` (a mounted secret), read at start."""
    registry_tls: ClientTlsSettings = ClientTlsSettings()
    """TLS of the calls to the registry: FLYWHEEL_<SERVICE>_REGISTRY_TLS__CA_FILE and so on."""

    @model_validator(mode="after")
    def _read_registry_token_file(self) -> Self:
        if self.registry_token_file:
            if self.registry_token:
                raise ValueError("set registry_token or registry_token_file, not both")
            token = read_secret_file(self.registry_token_file, "registry_token_file")
            object.__setattr__(self, "registry_token", token)  # frozen: set once here
        return self


class WithConsumerGroup(ServiceSettings):
    """A service that follows topics in Kafka consumer groups."""

    consumer_group: str = ""
    """Kafka consumer group (or the prefix of the service's groups); default the service
    name. A new group starts at the end of its topics."""

    def group(self, suffix: str = "") -> str:
        """The consumer group of one of the service's consumers."""
        base = self.consumer_group or self.service_name
        return f"{base}.{suffix}" if suffix else base
