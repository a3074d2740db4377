"""Where a blob lives in every artifact store: `sha256/ab/cdef...`, from a checked digest."""

from __future__ import annotations

from flywheel_common.errors import InvalidArgument, NotFound
from flywheel_registry.domain import SHA256_PATTERN


def check_digest(sha256: str) -> str:
    """The digest, or INVALID_ARGUMENT: no key or path derives from anything else."""
    if not SHA256_PATTERN.fullmatch(sha256):
        raise InvalidArgument(f"not a sha256 digest: {sha256!r}")
    return sha256


def blob_key(sha256: str) -> str:
    check_digest(sha256)
    return f"sha256/{sha256[:2]}/{sha256[2:]}"


def missing(sha256: str) -> NotFound:
    return NotFound(f"blob {sha256} is missing from the artifact store")
