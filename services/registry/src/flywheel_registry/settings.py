"""Configuration of the registry service, read from FLYWHEEL_REGISTRY_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Self

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from flywheel_common.settings import (
    GrpcSettings,
    SettingsSection,
    TelemetrySettings,
    WithConsumerGroup,
    WithDatabase,
)

MIB = 1024 * 1024


class S3Settings(SettingsSection):
    """The bucket of `ARTIFACT_STORE=s3`: AWS S3 or any S3-compatible server. Settings left
    empty fall back to botocore's defaults, as for the AWS CLI and MLflow: AWS_ACCESS_KEY_ID,
    AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_PROFILE, AWS_REGION, AWS_ENDPOINT_URL_S3,
    ~/.aws, or the instance's or pod's role."""

    bucket: str = ""
    """Bucket of the artifacts; it must exist. `s3://bucket/some/prefix` (an MLflow artifact
    root) sets the bucket and the prefix at once."""
    prefix: str = ""
    """Key prefix inside the bucket: blobs go to `<prefix>/sha256/ab/cdef...`."""
    endpoint_url: str = ""
    """URL of an S3-compatible server (MinIO, Ceph, OpenStack Swift's s3api...); empty: AWS."""
    region: str = ""
    """Region of the bucket, which request signatures name."""
    access_key_id: str = ""
    """Access key id; with the secret, it replaces botocore's credential chain."""
    secret_access_key: SecretStr = SecretStr("")
    """Secret access key."""
    addressing_style: Literal["auto", "path", "virtual"] = "auto"
    """`path` (http://host/bucket/key) for Swift, MinIO and most servers besides AWS;
    `virtual` (http://bucket.host/key); `auto` lets botocore choose."""
    part_bytes: int = Field(default=8 * MIB, ge=5 * MIB, le=5 * 1024 * MIB)
    """Artifacts larger than this go up as a multipart upload of parts this large (S3 takes
    parts of 5 MiB to 5 GiB); one part at a time is in memory."""

    @model_validator(mode="before")
    @classmethod
    def _split_s3_url(cls, data: Any) -> Any:
        bucket = data.get("bucket") if isinstance(data, dict) else None
        if not isinstance(bucket, str) or not bucket.startswith("s3://"):
            return data
        name, _, prefix = bucket.removeprefix("s3://").partition("/")
        if prefix and data.get("prefix"):
            raise ValueError(f"the bucket URL {bucket} has a prefix already; drop S3__PREFIX")
        return {**data, "bucket": name, "prefix": prefix or data.get("prefix", "")}

    @field_validator("prefix")
    @classmethod
    def _no_slashes_around(cls, prefix: str) -> str:
        return prefix.strip("/")


class RegistrySettings(WithDatabase, WithConsumerGroup):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_REGISTRY_")
    database_file = "registry.db"

    service_name: str = "flywheel-registry"
    grpc: GrpcSettings = GrpcSettings(port=50051)
    telemetry: TelemetrySettings = TelemetrySettings(metrics_port=9101)
    artifact_store: Literal["local", "database", "s3"] = "local"
    """Where artifacts and reference samples live: `local`, a folder (`ARTIFACT_ROOT`), for
    one replica; `database`, chunked rows in the registry's database, which every replica
    on one PostgreSQL reads; `s3`, objects in an S3-compatible bucket (`S3__*`), which
    every replica reads."""
    artifact_root: Path | None = None
    """Folder of the local artifact store; default: `<data_dir>/artifacts`."""
    max_artifact_bytes: int = Field(default=512 * 1024 * 1024, ge=1)
    """Largest ONNX artifact accepted; larger uploads fail with RESOURCE_EXHAUSTED."""
    max_reference_sample_bytes: int = Field(default=256 * 1024 * 1024, ge=1)
    """Largest reference sample accepted."""
    validation_timeout_seconds: float = Field(default=60.0, gt=0)
    """Time limit for checking and loading an uploaded model in onnxruntime."""
    max_graph_nodes: int = Field(default=200_000, ge=1)
    """Most nodes a model may have (graph, subgraphs and functions); more fail with
    RESOURCE_EXHAUSTED before onnxruntime loads it."""
    max_tensor_elements: int = Field(default=2**28, ge=1)
    """Largest tensor a model may build with a shape known without its inputs (ONNX shape
    inference); a bigger one (a tiny file that expands at run time) fails with
    INVALID_ARGUMENT."""
    protected_aliases: list[str] = Field(default_factory=list)
    """Aliases created protected (only the admin role moves them), e.g. ["production"]."""
    download_chunk_bytes: int = Field(default=1024 * 1024, ge=1024, le=16 * 1024 * 1024)
    """Chunk size of GetArtifact and GetReferenceSample streams."""
    s3: S3Settings = S3Settings()
    """The bucket of the s3 artifact store."""

    @model_validator(mode="after")
    def _s3_store_has_a_bucket(self) -> Self:
        if self.artifact_store == "s3" and not self.s3.bucket:
            raise ValueError("artifact_store=s3 needs a bucket: set S3__BUCKET")
        return self

    def artifact_folder(self) -> Path:
        return self.artifact_root or self.data_dir / "artifacts"
