"""Uploads spooled to a local file as they arrive, hashed and counted, whatever the store."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from pathlib import Path
from typing import Protocol

from flywheel_common.errors import ResourceExhausted


class SpooledUpload:
    """Bytes being received, hashed and counted as they arrive, spooled to a local file so
    that no upload is ever held whole in memory; a store decides what `commit` does."""

    def __init__(self, spool: Path, limit_bytes: int, what: str) -> None:
        self._limit = limit_bytes
        self._what = what
        self._hash = hashlib.sha256()
        self._temp = spool / f"{uuid.uuid4().hex}.part"
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

    async def discard(self) -> None:
        def remove() -> None:
            self._file.close()
            self._temp.unlink(missing_ok=True)

        await asyncio.to_thread(remove)


class CopiesFromSpool(Protocol):
    """A store that takes a finished upload by copying its spool file (database, S3)."""

    spool: Path

    async def store(self, sha256: str, size: int, spooled: Path) -> bool:
        """Keep the spooled file under its digest; False when that blob existed already."""
        ...


class CopiedUpload(SpooledUpload):
    """An upload its store copies from the spool file on commit; the file goes either way."""

    def __init__(self, store: CopiesFromSpool, limit_bytes: int, what: str) -> None:
        super().__init__(store.spool, limit_bytes, what)
        self._store = store

    async def commit(self) -> bool:
        await asyncio.to_thread(self._file.close)
        try:
            return await self._store.store(self.sha256(), self.size, self._temp)
        finally:
            self._temp.unlink(missing_ok=True)
