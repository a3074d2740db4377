"""Model artifacts pulled from the registry into a local cache keyed by sha256."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import grpc

from flywheel.registry.v1 import registry_pb2 as registry
from flywheel_common.errors import NotFound, Unavailable
from flywheel_common.registry_client import RegistryClient


class ArtifactFetcher:
    """Downloads artifacts from the registry into a local cache keyed by sha256."""

    def __init__(self, registry: RegistryClient, cache_dir: Path) -> None:
        self._registry = registry
        self._cache = cache_dir

    async def latest_versions(self, model: str, count: int) -> list[int]:
        try:
            response = await self._registry.stub().ListModelVersions(
                registry.ListModelVersionsRequest(model=model, page_size=count),
                metadata=self._registry.metadata,
            )
        except grpc.aio.AioRpcError as error:
            raise self._registry.failure(error) from error
        return [v.version for v in response.model_versions]

    async def fetch(self, model: str, version: int) -> tuple[str, Path]:
        """The artifact's sha256 and its verified file in the cache."""
        digest = hashlib.sha256()
        expected = ""
        temp = self._cache / "tmp" / f"{model}-{version}-{uuid.uuid4().hex}.part"
        temp.parent.mkdir(parents=True, exist_ok=True)
        try:
            with temp.open("wb") as handle:
                stream = self._registry.stub().GetArtifact(
                    registry.GetArtifactRequest(model=model, version=version),
                    metadata=self._registry.metadata,
                )
                async for message in stream:
                    if message.HasField("artifact"):
                        expected = message.artifact.sha256
                        cached = self._path(expected)
                        if cached.exists():
                            stream.cancel()
                            handle.close()
                            temp.unlink(missing_ok=True)
                            return expected, cached
                    digest.update(message.chunk)
                    handle.write(message.chunk)
        except grpc.aio.AioRpcError as error:
            temp.unlink(missing_ok=True)
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"the registry has no {model} version {version}") from error
            raise self._registry.failure(error) from error
        if digest.hexdigest() != expected:
            temp.unlink(missing_ok=True)
            raise Unavailable(
                f"artifact of {model} v{version} failed verification: expected sha256 {expected}, "
                f"got {digest.hexdigest()}"
            )
        target = self._path(expected)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(temp, target)
        return expected, target

    def _path(self, sha256: str) -> Path:
        return self._cache / "sha256" / sha256[:2] / sha256[2:]

    async def close(self) -> None:
        await self._registry.stop()
