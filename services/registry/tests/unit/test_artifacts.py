"""The content-addressed blob store: where blobs land, and that no digest escapes the root."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from flywheel_common.errors import InvalidArgument, NotFound, ResourceExhausted
from flywheel_registry.artifacts import LocalBlobStore

DATA = b"onnx bytes" * 100
DIGEST = hashlib.sha256(DATA).hexdigest()

NOT_DIGESTS = [
    "../..",
    "../../etc/passwd",
    "../" + "a" * 61,
    "ab/" + "c" * 61,
    "/" + "a" * 63,
    DIGEST.upper(),
    DIGEST[:-1] + "g",
    DIGEST[:-1],
    DIGEST + "0",
    "",
]


@pytest.fixture
def store(tmp_path: Path) -> LocalBlobStore:
    return LocalBlobStore(tmp_path / "blobs")


async def stored(store: LocalBlobStore, data: bytes) -> bool:
    upload = store.upload(limit_bytes=len(data), what="artifact")
    await upload.write(data[:7])
    await upload.write(data[7:])
    return await upload.commit()


def files_under(root: Path) -> list[Path]:
    return sorted(path.relative_to(root) for path in root.rglob("*") if path.is_file())


async def test_a_blob_lands_under_its_digest(store: LocalBlobStore, tmp_path: Path) -> None:
    assert await stored(store, DATA)
    root = tmp_path / "blobs"
    assert files_under(root) == [Path("sha256", DIGEST[:2], DIGEST[2:])]
    assert store.path_of(DIGEST) == root.resolve() / "sha256" / DIGEST[:2] / DIGEST[2:]
    assert b"".join([chunk async for chunk in store.read(DIGEST, chunk_size=64)]) == DATA
    assert b"".join([chunk async for chunk in store.read(DIGEST, offset=10)]) == DATA[10:]
    assert await store.size(DIGEST) == len(DATA)


async def test_the_same_bytes_are_stored_once(store: LocalBlobStore, tmp_path: Path) -> None:
    assert await stored(store, DATA)
    assert not await stored(store, DATA)  # already there: the second upload is dropped
    assert files_under(tmp_path / "blobs") == [Path("sha256", DIGEST[:2], DIGEST[2:])]


async def test_discarded_and_oversize_uploads_leave_nothing(
    store: LocalBlobStore, tmp_path: Path
) -> None:
    upload = store.upload(limit_bytes=len(DATA), what="artifact")
    await upload.write(DATA)
    await upload.discard()
    too_big = store.upload(limit_bytes=len(DATA) - 1, what="reference sample")
    with pytest.raises(
        ResourceExhausted, match=f"the reference sample exceeds the limit of {len(DATA) - 1} bytes"
    ):
        await too_big.write(DATA)
    await too_big.discard()
    assert files_under(tmp_path / "blobs") == []


async def test_deleted_blobs_are_gone(store: LocalBlobStore) -> None:
    await stored(store, DATA)
    await store.delete(DIGEST)
    with pytest.raises(NotFound, match=f"blob {DIGEST} is missing from the artifact store"):
        await store.size(DIGEST)
    with pytest.raises(NotFound, match="is missing"):
        [chunk async for chunk in store.read(DIGEST)]


@pytest.mark.parametrize("digest", NOT_DIGESTS)
async def test_only_lowercase_sha256_digests_name_blobs(store: LocalBlobStore, digest: str) -> None:
    with pytest.raises(InvalidArgument, match="not a sha256 digest"):
        store.path_of(digest)
    with pytest.raises(InvalidArgument, match="not a sha256 digest"):
        await store.size(digest)
    with pytest.raises(InvalidArgument, match="not a sha256 digest"):
        [chunk async for chunk in store.read(digest)]
    with pytest.raises(InvalidArgument, match="not a sha256 digest"):
        await store.delete(digest)
