"""One way to call the registry from another service: a lazy TLS channel and the bearer
token."""

from __future__ import annotations

import hashlib
from typing import Any

import grpc

from flywheel.registry.v1 import registry_pb2 as registry
from flywheel.registry.v1 import registry_pb2_grpc as registry_grpc
from flywheel.registry.v1 import types_pb2 as registry_types
from flywheel_common.channels import aio_channel
from flywheel_common.errors import (
    FailedPrecondition,
    FlywheelError,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from flywheel_common.settings import ClientTlsSettings, WithRegistry


class RegistryClient:
    """The registry's gRPC API for the deployer, the gateway, the drift detector, retrain."""

    def __init__(
        self,
        address: str,
        tls: ClientTlsSettings,
        token: str = "",
        max_message_bytes: int = 64 << 20,
    ) -> None:
        self.address = address
        self._tls = tls
        self.metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {token}"),) if token else ()
        )
        self._max_message_bytes = max_message_bytes
        self._channel: grpc.aio.Channel | None = None

    @classmethod
    def of(cls, settings: WithRegistry) -> RegistryClient:
        """The client a service's settings describe: address, TLS and token."""
        return cls(settings.registry_address, settings.registry_tls, settings.registry_token)

    def stub(self) -> Any:
        """The registry stub (typed Any: grpc's stubs describe the sync API only)."""
        if self._channel is None:
            self._channel = aio_channel(
                self.address,
                self._tls,
                options=[("grpc.max_receive_message_length", self._max_message_bytes)],
            )
        return registry_grpc.RegistryServiceStub(self._channel)

    async def model_version(self, model: str, version: int) -> registry_types.ModelVersion:
        """A version's record; NotFound when the registry has no such version."""
        try:
            response = await self.stub().GetModelVersion(
                registry.GetModelVersionRequest(model=model, version=version),
                metadata=self.metadata,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"the registry has no {model} version {version}") from error
            raise self.failure(error) from error
        found: registry_types.ModelVersion = response.model_version
        return found

    async def servable_version(self, model: str, version: int) -> registry_types.ModelVersion:
        """A version that may take traffic: it exists and is not archived."""
        found = await self.model_version(model, version)
        if found.status == registry_types.MODEL_VERSION_STATUS_ARCHIVED:
            raise FailedPrecondition(
                f"{model} version {version} is archived and cannot take traffic; "
                "pick another version"
            )
        return found

    async def alias_version(self, model: str, alias: str) -> registry_types.ModelVersion | None:
        """The version an alias points at; None when the model or the alias does not exist."""
        try:
            response = await self.stub().GetModelVersionByAlias(
                registry.GetModelVersionByAliasRequest(model=model, alias=alias),
                metadata=self.metadata,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return None
            raise self.failure(error) from error
        found: registry_types.ModelVersion = response.model_version
        return found

    async def set_alias(self, model: str, alias: str, version: int, reason: str) -> None:
        """Point an alias at a version (setting `production` is a promotion)."""
        try:
            await self.stub().SetAlias(
                registry.SetAliasRequest(model=model, alias=alias, version=version, reason=reason),
                metadata=self.metadata,
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"the registry has no {model} version {version}") from error
            if error.code() in (
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.PERMISSION_DENIED,
                grpc.StatusCode.UNAUTHENTICATED,
            ):
                raise FailedPrecondition(
                    f"the registry refused to move {alias!r}: {error.details()}"
                ) from error
            raise self.failure(error) from error

    async def reference_sample(
        self, model: str, version: int
    ) -> tuple[registry_types.ReferenceSampleInfo, bytes]:
        """A version's reference sample (its spec and bytes, sha256 checked); NotFound when
        the version was registered without one."""
        info = registry_types.ReferenceSampleInfo()
        parts: list[bytes] = []
        try:
            stream = self.stub().GetReferenceSample(
                registry.GetReferenceSampleRequest(model=model, version=version),
                metadata=self.metadata,
            )
            async for message in stream:
                if message.HasField("reference_sample"):
                    info.CopyFrom(message.reference_sample)
                parts.append(message.chunk)
        except grpc.aio.AioRpcError as error:
            if error.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                raise NotFound(f"{model} version {version} has no reference sample") from error
            raise self.failure(error) from error
        data = b"".join(parts)
        if hashlib.sha256(data).hexdigest() != info.sha256:
            raise Unavailable(f"the reference sample of {model} v{version} failed its sha256 check")
        return info, data

    def failure(self, error: grpc.aio.AioRpcError) -> FlywheelError:
        """A refused token is this service's configuration, not an outage: FAILED_PRECONDITION
        (never UNAVAILABLE, which callers would retry forever)."""
        if error.code() in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
            return FailedPrecondition(
                f"the registry refused this service's registry token: {error.details()}; "
                "grant it the role its README names on the model"
            )
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            # Bad input, which retrying cannot mend, stays INVALID_ARGUMENT; the rest is the
            # registry's trouble, which a retry may get past.
            return InvalidArgument(f"the registry refused: {error.details()}")
        return Unavailable(f"the registry at {self.address} failed: {error.details()}")

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
