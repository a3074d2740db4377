"""Service lifecycle: start components in order, serve, drain and stop in reverse on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from typing import Protocol

from opentelemetry import metrics

from flywheel_common.grpc_server import GrpcServer, ServiceBinding
from flywheel_common.logging import configure_logging
from flywheel_common.settings import ServiceSettings
from flywheel_common.telemetry import Telemetry, configure_telemetry
from flywheel_common.topics import ensure_topics

log = logging.getLogger(__name__)
_ready_services = metrics.get_meter(__name__).create_up_down_counter(
    "flywheel.service.ready", description="1 while the service reports SERVING"
)


class Component(Protocol):
    """Anything with a start and a stop: database, publisher, consumer, relay."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class TopicProvisioner:
    """Creates Flywheel's topics at start-up (idempotent; a no-op when they exist)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._kafka = settings.kafka

    async def start(self) -> None:
        await ensure_topics(
            self._kafka.bootstrap_servers, replication_factor=self._kafka.replication_factor
        )

    async def stop(self) -> None:
        return None


def instance_id(settings: ServiceSettings) -> str:
    return settings.instance_id or f"{socket.gethostname()}-{os.getpid()}"


class Service:
    """A running Flywheel service: its gRPC server and the components behind it."""

    def __init__(
        self,
        settings: ServiceSettings,
        bindings: Sequence[ServiceBinding],
        components: Sequence[Component] = (),
    ) -> None:
        self.settings = settings
        self.name = settings.service_name
        self.instance_id = instance_id(settings)
        self.telemetry: Telemetry = configure_telemetry(
            self.name, self.instance_id, settings.telemetry
        )
        self.grpc = GrpcServer(settings.grpc, bindings, settings.auth.tokens)
        self.components = list(components)
        self._started: list[Component] = []
        self._serving = False

    async def start(self) -> None:
        """Bind gRPC first (health answers NOT_SERVING), start components, then SERVING."""
        await self.grpc.start()
        try:
            for component in self.components:
                await component.start()
                self._started.append(component)
        except BaseException:
            await self.stop()
            raise
        await self.grpc.set_serving(True)
        self._serving = True
        _ready_services.add(1, {"service": self.name})
        log.info("service ready", extra={"service": self.name, "address": self.grpc.address})

    async def stop(self) -> None:
        if self._serving:
            self._serving = False
            _ready_services.add(-1, {"service": self.name})
        await self.grpc.stop()
        while self._started:
            component = self._started.pop()
            try:
                async with asyncio.timeout(self.settings.component_stop_timeout_seconds):
                    await component.stop()
            except TimeoutError:
                log.error(
                    "component did not stop in time; abandoned",
                    extra={
                        "component": type(component).__name__,
                        "timeout_seconds": self.settings.component_stop_timeout_seconds,
                    },
                )
            except Exception:
                log.exception(
                    "component failed to stop", extra={"component": type(component).__name__}
                )
        log.info("service stopped", extra={"service": self.name})


async def serve_until_signalled(service: Service) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    await service.start()
    await stop_requested.wait()
    log.info("shutdown requested", extra={"service": service.name})
    await service.stop()
    service.telemetry.shutdown()


def run_service(settings: ServiceSettings, build: Callable[[ServiceSettings], Service]) -> None:
    """The body of every service's `main`: logging first, then build and serve."""
    configure_logging(
        settings.service_name, settings.telemetry.log_level, settings.telemetry.log_json
    )

    async def build_and_serve() -> None:
        await serve_until_signalled(build(settings))

    asyncio.run(build_and_serve())
