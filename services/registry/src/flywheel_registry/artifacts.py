"""Content-addressed blob store for artifacts and reference samples in a local folder:
`sha256/ab/cdef...` (it implements `handlers.ports.BlobStore`)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from flywheel_common.errors import InvalidArgument, NotFound, ResourceExhausted
from flywheel_registry.domain import SHA256_PATTERN


class LocalBlobStore:
    """Blobs in a local folder. Paths derive only from validated digests, so none can
    escape the root; uploads land in `tmp/` and move into place atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def path_of(self, sha256: str) -> Path:
        if not SHA256_PATTERN.fullmatch(sha256):
            raise InvalidArgument(f"not a sha256 digest: {sha256!r}")
        path = (self.root / "sha256" / sha256[:2] / sha256[2:]).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidArgument(f"blob path escapes the store: {sha256!r}")
        return path

    def upload(self, limit_bytes: int, what: str) -> LocalUpload:
        return LocalUpload(self, limit_bytes, what)

    async def read(
        self, sha256: str, offset: int = 0, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        path = self.path_of(sha256)
        try:
            handle = await asyncio.to_thread(path.open, "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} is missing from the artifact store") from None
        try:
            await asyncio.to_thread(handle.seek, offset)
            while chunk := await asyncio.to_thread(handle.read, chunk_size):
                yield chunk
        finally:
            handle.close()

    async def size(self, sha256: str) -> int:
        try:
            return (await asyncio.to_thread(self.path_of(sha256).stat)).st_size
        except FileNotFoundError:
            raise NotFound(f"blob {sha256} is missing from the artifact store") from None

    async def delete(self, sha256: str) -> None:
        await asyncio.to_thread(self.path_of(sha256).unlink, True)


class LocalUpload:
    def __init__(self, store: LocalBlobStore, limit_bytes: int, what: str) -> None:
        self._store = store
        self._limit = limit_bytes
        self._what = what
        self._hash = hashlib.sha256()
        self._temp = store.root / "tmp" / f"{uuid.uuid4().hex}.part"
        self._file = self._temp.open("wb")
        self.size = 0

    async def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self._limit:
            raise ResourceExhausted(f"the {self._what} exceeds the limit of {self._limit} bytes")
        self._hash.update(chunk)
        await asyncio.to_thread(self._file.write, chunk)

    def sha256(self) -> str:
        return self._hash.hexdigest()

    async def read_all(self) -> bytes:
        await asyncio.to_thread(self._file.flush)
        return await asyncio.to_thread(self._temp.read_bytes)

    async def commit(self) -> bool:
        target = self._store.path_of(self.sha256())

        def move() -> bool:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            if target.exists():
                self._temp.unlink()
                return False
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self._temp, target)
            return True

        return await asyncio.to_thread(move)

    async def discard(self) -> None:
        def remove() -> None:
            self._file.close()
            self._temp.unlink(missing_ok=True)

        await asyncio.to_thread(remove)
