"""Content-addressed blob stores for artifacts and reference samples, each a
`handlers.ports.BlobStore` keeping a blob under `sha256/ab/cdef...`: a local folder (the
embedded default) or the registry's own database."""

from flywheel_registry.artifacts.database import BlobRow, ChunkRow, DatabaseBlobStore
from flywheel_registry.artifacts.local import LocalBlobStore
from flywheel_registry.artifacts.spool import CopiedUpload, SpooledUpload

__all__ = [
    "BlobRow",
    "ChunkRow",
    "CopiedUpload",
    "DatabaseBlobStore",
    "LocalBlobStore",
    "SpooledUpload",
]
