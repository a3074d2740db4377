"""The tests' view of an S3 bucket: the registry's settings for a prefix of it, and what
lies under that prefix."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from aiobotocore.session import get_session
from pydantic import SecretStr

from flywheel_registry.artifacts.s3 import client_options
from flywheel_registry.settings import S3Settings
from flywheel_testing.backends import S3Endpoint

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client


def s3_settings(endpoint: S3Endpoint, prefix: str) -> S3Settings:
    return S3Settings(
        bucket=endpoint.bucket,
        prefix=prefix,
        endpoint_url=endpoint.url,
        region=endpoint.region,
        access_key_id=endpoint.access_key_id,
        secret_access_key=SecretStr(endpoint.secret_access_key),
        addressing_style="path",
    )


@asynccontextmanager
async def s3_client(settings: S3Settings) -> AsyncIterator[S3Client]:
    async with get_session().create_client("s3", **client_options(settings)) as client:
        yield client


async def keys_under(client: S3Client, settings: S3Settings) -> set[str]:
    """Every key under the settings' prefix, without the prefix."""
    keys: set[str] = set()
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=settings.bucket, Prefix=f"{settings.prefix}/"
    )
    async for page in pages:
        keys.update(
            item["Key"].removeprefix(f"{settings.prefix}/") for item in page.get("Contents", [])
        )
    return keys


async def digests_under(client: S3Client, settings: S3Settings) -> set[str]:
    """The digests of the blobs under the settings' prefix (keys `sha256/ab/cdef...`)."""
    return {"".join(key.split("/")[1:]) for key in await keys_under(client, settings)}


async def delete_under(client: S3Client, settings: S3Settings) -> None:
    for key in await keys_under(client, settings):
        await client.delete_object(Bucket=settings.bucket, Key=f"{settings.prefix}/{key}")
