"""Content-addressed blob stores for artifacts and reference samples, each a
`handlers.ports.BlobStore` keeping a blob under `sha256/ab/cdef...`: a local folder (the
embedded default), the registry's own database, or an S3-compatible bucket."""

from flywheel_registry.artifacts.database import BlobRow, ChunkRow, DatabaseBlobStore
from flywheel_registry.artifacts.local import LocalBlobStore
from flywheel_registry.artifacts.s3 import S3BlobStore
from flywheel_registry.artifacts.spool import CopiedUpload, SpooledUpload

__all__ = [
    "BlobRow",
    "ChunkRow",
    "CopiedUpload",
    "DatabaseBlobStore",
    "LocalBlobStore",
    "S3BlobStore",
    "SpooledUpload",
]
