"""Artifacts in the registry's database, on SQLite and the real PostgreSQL: chunked rows
written from a spooled upload, stored once per digest, read back from any offset."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from sqlalchemy import func, select

from flywheel_common.db import Database
from flywheel_common.errors import InvalidArgument, NotFound, ResourceExhausted
from flywheel_registry.artifacts import ChunkRow, DatabaseBlobStore

pytestmark = pytest.mark.integration

CHUNK = 1024
DATA = os.urandom(3 * CHUNK + 517)  # three full chunks and a partial one
DIGEST = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def store(database: Database, tmp_path: Path) -> DatabaseBlobStore:
    return DatabaseBlobStore(database, tmp_path / "spool", chunk_bytes=CHUNK)


async def stored(store: DatabaseBlobStore, data: bytes) -> bool:
    upload = store.upload(limit_bytes=len(data), what="artifact")
    for start in range(0, len(data), 700):  # arrives in pieces unlike the stored chunks
        await upload.write(data[start : start + 700])
    assert upload.sha256() == hashlib.sha256(data).hexdigest()
    return await upload.commit()


async def chunk_rows(database: Database) -> int:
    async with database.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(ChunkRow)) or 0)


async def read(store: DatabaseBlobStore, offset: int = 0) -> bytes:
    return b"".join([chunk async for chunk in store.read(DIGEST, offset)])


async def test_a_blob_is_stored_in_chunks_and_read_back_from_any_offset(
    store: DatabaseBlobStore, database: Database, tmp_path: Path
) -> None:
    assert await stored(store, DATA)
    assert await chunk_rows(database) == 4
    assert await read(store) == DATA
    for offset in (1, CHUNK - 1, CHUNK, 2 * CHUNK + 5, len(DATA) - 1, len(DATA)):
        assert await read(store, offset) == DATA[offset:]
    assert list((tmp_path / "spool").iterdir()) == []  # the spool file is gone


async def test_the_same_bytes_are_stored_once(store: DatabaseBlobStore, database: Database) -> None:
    assert await stored(store, DATA)
    assert not await stored(store, DATA)
    assert await chunk_rows(database) == 4


async def test_oversize_and_discarded_uploads_leave_nothing(
    store: DatabaseBlobStore, database: Database, tmp_path: Path
) -> None:
    too_big = store.upload(limit_bytes=len(DATA) - 1, what="artifact")
    with pytest.raises(ResourceExhausted, match="exceeds the limit"):
        await too_big.write(DATA)
    await too_big.discard()
    discarded = store.upload(limit_bytes=len(DATA), what="artifact")
    await discarded.write(DATA)
    await discarded.discard()
    assert await chunk_rows(database) == 0
    assert list((tmp_path / "spool").iterdir()) == []


async def test_deleted_and_unknown_blobs_are_not_found(
    store: DatabaseBlobStore, database: Database
) -> None:
    await stored(store, DATA)
    await store.delete(DIGEST)
    assert await chunk_rows(database) == 0
    with pytest.raises(NotFound, match=f"blob {DIGEST} is missing"):
        await read(store)
    with pytest.raises(InvalidArgument, match="not a sha256 digest"):
        [chunk async for chunk in store.read("../etc/passwd")]
    with pytest.raises(InvalidArgument, match="not a sha256 digest"):
        await store.delete("../etc/passwd")
