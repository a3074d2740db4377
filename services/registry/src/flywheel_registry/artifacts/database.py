"""Blobs in the registry's own database, as chunked rows: for replicas on one PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import BigInteger, Integer, LargeBinary, String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from flywheel_common.db import TIMESTAMP, Base, Database, insert_unless_present
from flywheel_registry.artifacts.keys import check_digest, missing
from flywheel_registry.artifacts.spool import CopiedUpload


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

    def upload(self, limit_bytes: int, what: str) -> CopiedUpload:
        return CopiedUpload(self, limit_bytes, what)

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
        """The blob from `offset`, in the chunks it was stored in (`chunk_size` is for the
        other stores; here a chunk is one row)."""
        async with self._database.transaction() as session:
            blob = await session.get(BlobRow, check_digest(sha256))
        if blob is None:
            raise missing(sha256)
        seq, skip = divmod(offset, blob.chunk_bytes)
        while True:
            async with self._database.transaction() as session:
                data = await session.scalar(
                    select(ChunkRow.data).where(ChunkRow.sha256 == sha256, ChunkRow.seq == seq)
                )
            if data is None:
                return
            if rest := data[skip:]:  # empty when the offset is the very end
                yield rest
            seq, skip = seq + 1, 0

    async def delete(self, sha256: str) -> None:
        check_digest(sha256)
        async with self._database.transaction() as session:
            await session.execute(delete(ChunkRow).where(ChunkRow.sha256 == sha256))
            await session.execute(delete(BlobRow).where(BlobRow.sha256 == sha256))
