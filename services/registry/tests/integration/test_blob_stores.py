"""Every artifact store on its real backend (a folder, SQLite, PostgreSQL, Swift's S3 API):
a blob goes in from a spooled upload once per digest and comes back from any offset in
chunks; what is discarded, deleted or unknown leaves nothing and is NOT_FOUND. Then what
only the database (rows) and S3 (multipart, existing objects, the bucket) do."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select

from flywheel_common.db import Database
from flywheel_common.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted
from flywheel_registry.artifacts import (
    BlobRow,
    ChunkRow,
    DatabaseBlobStore,
    LocalBlobStore,
    S3BlobStore,
)
from flywheel_registry.settings import S3Settings
from flywheel_testing.backends import fresh_database
from flywheel_testing.s3 import digests_under, keys_under, s3_client

pytestmark = pytest.mark.integration

CHUNK = 1024
DATA = os.urandom(3 * CHUNK + 517)  # three full chunks and a partial one
DIGEST = hashlib.sha256(DATA).hexdigest()
MIB = 1024 * 1024

Store = LocalBlobStore | DatabaseBlobStore | S3BlobStore


@dataclass
class StoreCase:
    store: Store
    spool: Path
    digests: Callable[[], Awaitable[set[str]]]
    """The digests of the blobs the store holds, read from its backend."""


def local_digests(root: Path) -> Callable[[], Awaitable[set[str]]]:
    async def digests() -> set[str]:
        return {p.parent.name + p.name for p in (root / "sha256").rglob("*") if p.is_file()}

    return digests


def database_digests(database: Database) -> Callable[[], Awaitable[set[str]]]:
    async def digests() -> set[str]:
        async with database.transaction() as session:
            return set(await session.scalars(select(BlobRow.sha256)))

    return digests


def bucket_digests(settings: S3Settings) -> Callable[[], Awaitable[set[str]]]:
    async def digests() -> set[str]:
        async with s3_client(settings) as client:
            return await digests_under(client, settings)

    return digests


@pytest.fixture(params=["local", "sqlite", "postgresql", "s3"])
def case(request: pytest.FixtureRequest) -> StoreCase:
    case: StoreCase = request.getfixturevalue(f"{request.param}_case")
    return case


@pytest.fixture
def local_case(tmp_path: Path) -> StoreCase:
    store = LocalBlobStore(tmp_path / "blobs")
    return StoreCase(store, store.root / "tmp", local_digests(store.root))


@asynccontextmanager
async def database_case(url: str, spool: Path) -> AsyncIterator[StoreCase]:
    database = await fresh_database(url)
    store = DatabaseBlobStore(database, spool, chunk_bytes=CHUNK)
    yield StoreCase(store, spool, database_digests(database))
    await database.stop()


@pytest.fixture
async def sqlite_case(tmp_path: Path) -> AsyncIterator[StoreCase]:
    async with database_case(
        f"sqlite+aiosqlite:///{tmp_path / 'test.db'}", tmp_path / "spool"
    ) as case:
        yield case


@pytest.fixture
async def postgresql_case(postgres_url: str, tmp_path: Path) -> AsyncIterator[StoreCase]:
    async with database_case(postgres_url, tmp_path / "spool") as case:
        yield case


@pytest.fixture
async def s3_case(s3: S3Settings, tmp_path: Path) -> AsyncIterator[StoreCase]:
    store = S3BlobStore(s3, tmp_path / "spool")
    await store.start()
    yield StoreCase(store, tmp_path / "spool", bucket_digests(s3))
    await store.stop()


async def stored(store: Store, data: bytes, piece: int = 700) -> bool:
    upload = store.upload(limit_bytes=len(data), what="artifact")
    for start in range(0, len(data), piece):  # arrives in pieces unlike the stored chunks
        await upload.write(data[start : start + piece])
    assert upload.sha256() == hashlib.sha256(data).hexdigest()
    return await upload.commit()


async def chunks(store: Store, digest: str, offset: int = 0, size: int = CHUNK) -> list[bytes]:
    return [chunk async for chunk in store.read(digest, offset, size)]


async def test_a_blob_comes_back_from_any_offset_in_chunks(case: StoreCase) -> None:
    assert await stored(case.store, DATA)
    assert await case.digests() == {DIGEST}
    for offset in (0, 1, CHUNK - 1, CHUNK, 2 * CHUNK + 5, len(DATA) - 1, len(DATA)):
        read = await chunks(case.store, DIGEST, offset)
        assert b"".join(read) == DATA[offset:]
        assert all(0 < len(chunk) <= CHUNK for chunk in read)
    assert list(case.spool.iterdir()) == []  # the spool file is gone


async def test_the_same_bytes_are_stored_once(case: StoreCase) -> None:
    assert await stored(case.store, DATA)
    assert not await stored(case.store, DATA)
    assert await case.digests() == {DIGEST}
    assert list(case.spool.iterdir()) == []


async def test_oversize_and_discarded_uploads_leave_nothing(case: StoreCase) -> None:
    too_big = case.store.upload(limit_bytes=len(DATA) - 1, what="artifact")
    with pytest.raises(ResourceExhausted, match="exceeds the limit"):
        await too_big.write(DATA)
    await too_big.discard()
    discarded = case.store.upload(limit_bytes=len(DATA), what="artifact")
    await discarded.write(DATA)
    await discarded.discard()
    assert await case.digests() == set()
    assert list(case.spool.iterdir()) == []


async def test_deleted_and_unknown_blobs_are_not_found(case: StoreCase) -> None:
    await stored(case.store, DATA)
    await case.store.delete(DIGEST)
    assert await case.digests() == set()
    with pytest.raises(NotFound, match=f"blob {DIGEST} is missing from the artifact store"):
        await chunks(case.store, DIGEST)
    with pytest.raises(InvalidArgument, match="not a sha256 digest"):
        await chunks(case.store, "../etc/passwd")
    with pytest.raises(InvalidArgument, match="not a sha256 digest"):
        await case.store.delete("../etc/passwd")


async def chunk_rows(database: Database) -> int:
    async with database.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(ChunkRow)) or 0)


async def test_the_database_keeps_a_blob_as_rows_of_its_chunk_size(
    database: Database, tmp_path: Path
) -> None:
    store = DatabaseBlobStore(database, tmp_path / "spool", chunk_bytes=CHUNK)
    assert await stored(store, DATA)
    assert not await stored(store, DATA)
    assert await chunk_rows(database) == 4
    await store.delete(DIGEST)
    assert await chunk_rows(database) == 0


@pytest.fixture
async def s3_store(s3: S3Settings, tmp_path: Path) -> AsyncIterator[S3BlobStore]:
    store = S3BlobStore(s3.model_copy(update={"part_bytes": 5 * MIB}), tmp_path / "spool")
    await store.start()
    yield store
    await store.stop()


async def test_a_large_blob_goes_up_in_parts_and_streams_back_in_ranges(
    s3_store: S3BlobStore, s3: S3Settings
) -> None:
    large = os.urandom(11 * MIB + 3)  # parts of 5, 5 and 1 MiB
    digest = hashlib.sha256(large).hexdigest()
    assert await stored(s3_store, large, piece=64 * 1024)
    async with s3_client(s3) as client:
        assert await keys_under(client, s3) == {f"sha256/{digest[:2]}/{digest[2:]}"}
        head = await client.head_object(Bucket=s3.bucket, Key=s3_store.key_of(digest))
    assert head["ETag"].endswith('-3"')  # a multipart upload of three parts
    assert head["ContentLength"] == len(large)
    whole = await chunks(s3_store, digest, size=MIB)
    assert [len(chunk) for chunk in whole] == [MIB] * 11 + [3]
    assert b"".join(whole) == large
    for offset in (5 * MIB - 1, 5 * MIB + 7, len(large) - 1):
        assert b"".join(await chunks(s3_store, digest, offset, MIB)) == large[offset:]


async def test_an_object_that_exists_is_not_written_again(
    s3_store: S3BlobStore, s3: S3Settings
) -> None:
    assert await stored(s3_store, DATA)
    key = s3_store.key_of(DIGEST)
    async with s3_client(s3) as client:
        # Changed behind the store's back: a second upload of the digest must leave it be.
        await client.put_object(Bucket=s3.bucket, Key=key, Body=b"changed")
        assert not await stored(s3_store, DATA)
        kept = await client.get_object(Bucket=s3.bucket, Key=key)
        assert await kept["Body"].read() == b"changed"


async def test_a_missing_bucket_or_a_wrong_secret_fails_the_start(
    s3: S3Settings, tmp_path: Path
) -> None:
    missing = S3BlobStore(s3.model_copy(update={"bucket": "no-such-bucket"}), tmp_path)
    with pytest.raises(FailedPrecondition, match=r"s3://no-such-bucket/tests/.* does not exist"):
        await missing.start()
    refused = S3BlobStore(s3.model_copy(update={"secret_access_key": SecretStr("wrong")}), tmp_path)
    with pytest.raises(FailedPrecondition, match="refused access"):
        await refused.start()
