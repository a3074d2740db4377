"""Blobs as objects of an S3-compatible bucket: for replicas that share no file system."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from flywheel_common.errors import FailedPrecondition, Unavailable
from flywheel_registry.artifacts.keys import blob_key, missing
from flywheel_registry.artifacts.spool import CopiedUpload
from flywheel_registry.settings import S3Settings

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

log = logging.getLogger(__name__)

# HEAD answers a bare 404; GET names the missing key or bucket.
NOT_FOUND = frozenset({"404", "NoSuchKey", "NotFound"})
TRANSPORT_ERRORS = (BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError)


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def client_options(settings: S3Settings) -> dict[str, Any]:
    """The botocore client's options; what a setting leaves empty, botocore's own chain
    (environment, ~/.aws, the instance's role) provides."""
    options: dict[str, Any] = {
        "config": AioConfig(
            s3={"addressing_style": settings.addressing_style},
            # Servers other than AWS (Swift's s3api, older MinIO and Ceph) reject the
            # integrity checksums botocore sends by default since 1.36.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
    }
    if settings.endpoint_url:
        options["endpoint_url"] = settings.endpoint_url
    if settings.region:
        options["region_name"] = settings.region
    if settings.access_key_id:
        options["aws_access_key_id"] = settings.access_key_id
        options["aws_secret_access_key"] = settings.secret_access_key.get_secret_value()
    return options


class S3BlobStore:
    """Blobs as objects of a bucket (AWS S3, MinIO, Ceph, OpenStack Swift's s3api...) under
    `<prefix>/sha256/ab/cdef...`: every replica reads every artifact, and none is ever
    whole in memory. Uploads spool to a local file, then go up in one PUT or, past
    `part_bytes`, a multipart upload one part at a time; an object that exists already is
    left as it is (same key, same bytes). A read is one ranged GET streamed in chunks.
    A component: `start` opens the client and checks the bucket, `stop` closes it."""

    def __init__(self, settings: S3Settings, spool: Path) -> None:
        self._settings = settings
        self._bucket = settings.bucket
        self.spool = spool
        self._client: S3Client | None = None
        self._resources = AsyncExitStack()
        spool.mkdir(parents=True, exist_ok=True)

    @property
    def where(self) -> str:
        place = f"s3://{self._bucket}/{self._settings.prefix}".rstrip("/")
        return f"{place} at {self._settings.endpoint_url}" if self._settings.endpoint_url else place

    async def start(self) -> None:
        session = get_session()
        self._client = await self._resources.enter_async_context(
            session.create_client("s3", **client_options(self._settings))
        )
        try:
            await self._client.head_bucket(Bucket=self._bucket)
        except ClientError as error:
            await self.stop()
            if error_code(error) in NOT_FOUND | {"NoSuchBucket"}:
                raise FailedPrecondition(
                    f"the artifact bucket {self.where} does not exist: create it or set S3__BUCKET"
                ) from error
            raise FailedPrecondition(
                f"the artifact bucket {self.where} refused access ({error_code(error)}): "
                "check S3__ACCESS_KEY_ID, S3__SECRET_ACCESS_KEY and S3__REGION"
            ) from error
        except TRANSPORT_ERRORS as error:
            await self.stop()
            raise Unavailable(f"cannot reach the artifact bucket {self.where}: {error}") from error

    async def stop(self) -> None:
        self._client = None
        await self._resources.aclose()

    @property
    def client(self) -> S3Client:
        if self._client is None:
            raise Unavailable(f"the artifact store {self.where} is not started")
        return self._client

    def key_of(self, sha256: str) -> str:
        key = blob_key(sha256)
        return f"{self._settings.prefix}/{key}" if self._settings.prefix else key

    def upload(self, limit_bytes: int, what: str) -> CopiedUpload:
        return CopiedUpload(self, limit_bytes, what)

    async def store(self, sha256: str, size: int, spooled: Path) -> bool:
        """Upload the spooled file under its digest; False when that object existed."""
        key = self.key_of(sha256)
        async with self._failures(f"store blob {sha256}"):
            if await self._exists(key):
                return False
            if size > self._settings.part_bytes:
                await self._put_in_parts(key, spooled)
            else:
                with spooled.open("rb") as body:
                    await self.client.put_object(
                        Bucket=self._bucket, Key=key, Body=body, ContentLength=size
                    )
        return True

    async def read(
        self, sha256: str, offset: int = 0, chunk_size: int = 1 << 20
    ) -> AsyncIterator[bytes]:
        """The blob from `offset` (at most its size) in chunks of `chunk_size`, the last
        one shorter, from one GET that streams as the chunks are taken."""
        key = self.key_of(sha256)
        async with self._failures(f"read blob {sha256}"):
            try:
                response = await self.client.get_object(
                    Bucket=self._bucket, Key=key, Range=f"bytes={offset}-"
                )
            except ClientError as error:
                if error_code(error) in NOT_FOUND:
                    raise missing(sha256) from None
                if error_code(error) == "InvalidRange":  # the offset is the end
                    return
                raise
            async with response["Body"] as body:
                chunk = bytearray()
                while data := await body.read(chunk_size - len(chunk)):
                    chunk += data
                    if len(chunk) == chunk_size:
                        yield bytes(chunk)
                        chunk.clear()
                if chunk:
                    yield bytes(chunk)

    async def delete(self, sha256: str) -> None:
        key = self.key_of(sha256)
        async with self._failures(f"delete blob {sha256}"):
            await self.client.delete_object(Bucket=self._bucket, Key=key)

    async def _exists(self, key: str) -> bool:
        try:
            await self.client.head_object(Bucket=self._bucket, Key=key)
        except ClientError as error:
            if error_code(error) in NOT_FOUND:
                return False
            raise
        return True

    async def _put_in_parts(self, key: str, spooled: Path) -> None:
        started = await self.client.create_multipart_upload(Bucket=self._bucket, Key=key)
        upload_id = started["UploadId"]
        try:
            parts: list[CompletedPartTypeDef] = []
            with spooled.open("rb") as handle:
                while data := await asyncio.to_thread(handle.read, self._settings.part_bytes):
                    number = len(parts) + 1
                    part = await self.client.upload_part(
                        Bucket=self._bucket,
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=number,
                        Body=data,
                    )
                    parts.append({"ETag": part["ETag"], "PartNumber": number})
            await self.client.complete_multipart_upload(
                Bucket=self._bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            await self._abort(key, upload_id)
            raise

    async def _abort(self, key: str, upload_id: str) -> None:
        try:
            await self.client.abort_multipart_upload(
                Bucket=self._bucket, Key=key, UploadId=upload_id
            )
        except (ClientError, *TRANSPORT_ERRORS):
            # Its parts stay until a lifecycle rule for incomplete uploads removes them.
            log.warning("could not abort the multipart upload of %s", key, exc_info=True)

    @asynccontextmanager
    async def _failures(self, action: str) -> AsyncIterator[None]:
        """S3's and the network's errors as UNAVAILABLE, naming the bucket and the code."""
        try:
            yield
        except ClientError as error:
            raise Unavailable(
                f"the artifact bucket {self.where} could not {action}: {error_code(error)}"
            ) from error
        except TRANSPORT_ERRORS as error:
            raise Unavailable(
                f"the artifact bucket {self.where} could not {action}: {error}"
            ) from error
