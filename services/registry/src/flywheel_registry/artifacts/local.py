"""Blobs in a local folder: the embedded default, for one replica."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

from flywheel_common.errors import InvalidArgument
from flywheel_registry.artifacts.keys import blob_key, missing
from flywheel_registry.artifacts.spool import SpooledUpload


class LocalBlobStore:
    """Blobs in a local folder. Paths derive only from validated digests, so none can
    escape the root; uploads land in `tmp/` and move into place atomically."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "tmp").mkdir(parents=True, exist_ok=True)

    def path_of(self, sha256: str) -> Path:
        path = (self.root / blob_key(sha256)).resolve()
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
            raise missing(sha256) from None
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
            raise missing(sha256) from None

    async def delete(self, sha256: str) -> None:
        await asyncio.to_thread(self.path_of(sha256).unlink, True)


class LocalUpload(SpooledUpload):
    def __init__(self, store: LocalBlobStore, limit_bytes: int, what: str) -> None:
        super().__init__(store.root / "tmp", limit_bytes, what)
        self._store = store

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
