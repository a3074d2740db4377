"""Content-addressed blob stores for artifacts and reference samples (each implements
`handlers.ports.BlobStore`): a local folder (`sha256/ab/cdef...`, the embedded default) and
the registry's own database (chunked rows, for replicas that share one PostgreSQL)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import BigInteger, Integer, LargeBinary, String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from flywheel_common.db import TIMESTAMP, Base, Database, insert_unless_present
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


class BlobRow(Base):
    __tablename__ = "artifact_blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    chunk_bytes: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(TIMESTAMP)


class ChunkRow(Base):
    __tablename__ = "artifact_chunks"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class DatabaseBlobStore:
    """Blobs in the registry's own database, as rows of `chunk_bytes`: every replica on one
    PostgreSQL reads every artifact, and none is ever whole in memory (uploads spool to a
    local file, then go in chunk by chunk; reads stream one chunk at a time)."""

    def __init__(self, database: Database, spool: Path, chunk_bytes: int = 1 << 20) -> None:
        self._database = database
        self.spool = spool
        self._chunk_bytes = chunk_bytes
        spool.mkdir(parents=True, exist_ok=True)

    def upload(self, limit_bytes: int, what: str) -> DatabaseUpload:
        return DatabaseUpload(self, limit_bytes, what)

    async def store(self, sha256: str, size: int, spooled: Path) -> bool:
        """Insert the spooled file under its digest; False when that blob existed already."""
        async with self._database.transaction() as session:
            created = await insert_unless_present(
                session,
                BlobRow,
                {
                    "sha256": sha256,
                    "size": size,
                    "chunk_bytes": self._chunk_bytes,
                    "created_at": datetime.now(UTC),
                },
                ["sha256"],
            )
            if not created:
                return False
            with spooled.open("rb") as handle:
                seq = 0
                while data := await asyncio.to_thread(handle.read, self._chunk_bytes):
                    session.add(ChunkRow(sha256=sha256, seq=seq, data=data))
                    await session.flush()
                    session.expunge_all()
                    seq += 1
        return True

    async def read(
        self, sha256: str, offset: int = 0, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """The blob from `offset`, in the chunks it was stored in (`chunk_size` is the
        local store's; here a chunk is one row)."""
        if not SHA256_PATTERN.fullmatch(sha256):
            raise InvalidArgument(f"not a sha256 digest: {sha256!r}")
        async with self._database.transaction() as session:
            blob = await session.get(BlobRow, sha256)
        if blob is None:
            raise NotFound(f"blob {sha256} is missing from the artifact store")
        seq, skip = divmod(offset, blob.chunk_bytes)
        while True:
            async with self._database.transaction() as session:
                data = await session.scalar(
                    select(ChunkRow.data).where(ChunkRow.sha256 == sha256, ChunkRow.seq == seq)
                )
            if data is None:
                return
            yield data[skip:] if skip else data
            seq, skip = seq + 1, 0

    async def delete(self, sha256: str) -> None:
        if not SHA256_PATTERN.fullmatch(sha256):
            raise InvalidArgument(f"not a sha256 digest: {sha256!r}")
        async with self._database.transaction() as session:
            await session.execute(delete(ChunkRow).where(ChunkRow.sha256 == sha256))
            await session.execute(delete(BlobRow).where(BlobRow.sha256 == sha256))


class DatabaseUpload(SpooledUpload):
    def __init__(self, store: DatabaseBlobStore, limit_bytes: int, what: str) -> None:
        super().__init__(store.spool, limit_bytes, what)
        self._store = store

    async def commit(self) -> bool:
        await asyncio.to_thread(self._file.close)
        try:
            return await self._store.store(self.sha256(), self.size, self._temp)
        finally:
            self._temp.unlink(missing_ok=True)
