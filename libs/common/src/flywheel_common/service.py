"""Service lifecycle: start components in order, serve, drain and stop in reverse on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from opentelemetry import metrics

from flywheel_common import event_loop
from flywheel_common.grpc_server import GrpcServer, ServiceBinding
from flywheel_common.heap import settle_heap, settle_in_this_process
from flywheel_common.identities import Authenticator
from flywheel_common.logging import configure_logging
from flywheel_common.settings import ServiceSettings
from flywheel_common.telemetry import Telemetry, configure_telemetry
from flywheel_common.tls import TlsNotConfigured
from flywheel_common.topics import ensure_topics

log = logging.getLogger(__name__)

ABANDONED = "component did not stop in time; abandoned"
"""What a service logs when it gives up stopping a component."""
_meter = metrics.get_meter(__name__)
_ready_services = _meter.create_up_down_counter(
    "flywheel.service.ready", description="1 while the service reports SERVING"
)
_component_failures = _meter.create_counter(
    "flywheel.service.component_failures",
    description="Long-running components that ended while the service was serving",
)


class Component(Protocol):
    """Anything with a start and a stop: database, publisher, consumer, relay."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


@runtime_checkable
class Supervised(Protocol):
    """A component whose work runs in one long-lived task that must not end on its own."""

    @property
    def task(self) -> asyncio.Task[None] | None: ...


class TopicProvisioner:
    """Creates Flywheel's topics at start-up (idempotent; a no-op when they exist)."""

    def __init__(self, settings: ServiceSettings) -> None:
        self._kafka = settings.kafka

    async def start(self) -> None:
        await ensure_topics(
            self._kafka,
            replication_factor=self._kafka.replication_factor,
            retention_ms=self._kafka.topic_retention_ms,
        )

    async def stop(self) -> None:
        return None


def instance_id(settings: ServiceSettings) -> str:
    return settings.instance_id or f"{socket.gethostname()}-{os.getpid()}"


class Service:
    """A running Flywheel service: its gRPC server and the components behind it.

    The service supervises its components: when the task of one (a consumer, a table reader,
    a relay, an engine) ends while the service is up, the failure is logged with its cause
    and counted, health turns NOT_SERVING at once, and `failed` is set, on which
    `serve_until_signalled` stops the process with a non-zero status so that its supervisor
    (Kubernetes, `make run`) restarts it. A replica never keeps answering SERVING with a
    dead loop inside.
    """

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
        authenticator = Authenticator(
            settings.auth, str(settings.model_config.get("env_prefix", "FLYWHEEL_"))
        )
        self.grpc = GrpcServer(
            settings.grpc,
            bindings,
            authenticator,
            env_prefix=str(type(settings).model_config.get("env_prefix", "")),
        )
        self.components = list(components)
        self._started: list[Component] = []
        self._serving = False
        self._stopping = False
        self.failed = asyncio.Event()
        """Set when a supervised component died; `failure` says which and why."""
        self.failure = ""
        self._unhealthy: asyncio.Future[None] | None = None

    @property
    def serving(self) -> bool:
        """Started in full and healthy: health answers SERVING."""
        return self._serving

    async def start(self) -> None:
        """Bind gRPC first (health answers NOT_SERVING), start components, then SERVING."""
        await self.grpc.start()
        try:
            for component in self.components:
                await component.start()
                self._started.append(component)
                self._supervise(component)
        except BaseException:
            await self.stop()
            raise
        await self.grpc.set_serving(True)
        self._serving = True
        _ready_services.add(1, {"service": self.name})
        log.info(
            "service ready",
            extra={
                "service": self.name,
                "address": self.grpc.address,
                "event_loop": self.settings.event_loop.value,
            },
        )

    def _supervise(self, component: Component) -> None:
        if isinstance(component, Supervised) and component.task is not None:
            name = type(component).__name__
            component.task.add_done_callback(lambda done: self._component_ended(name, done))

    def _component_ended(self, name: str, task: asyncio.Task[None]) -> None:
        if self._stopping:
            return
        cause = task.exception() if not task.cancelled() else None
        self.failure = f"{name} ({task.get_name()}) ended: " + (
            f"{type(cause).__name__}: {cause}" if cause is not None else "stopped unexpectedly"
        )
        log.error(
            "component failed; the service reports NOT_SERVING and stops",
            exc_info=cause,
            extra={"service": self.name, "component": name, "failure": self.failure},
        )
        _component_failures.add(1, {"service": self.name, "component": name})
        if self._serving:
            self._serving = False
            _ready_services.add(-1, {"service": self.name})
        self._unhealthy = asyncio.ensure_future(self.grpc.set_serving(False))
        self.failed.set()

    async def stop(self) -> None:
        self._stopping = True
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
                    ABANDONED,
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


async def serve_until_signalled(service: Service) -> int:
    """Run until SIGTERM or SIGINT, or until a component fails, then shut down gracefully.
    Returns the process exit status: 0 when asked to stop, 1 after a component failed."""
    loop = asyncio.get_running_loop()
    stop_requested = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop_requested.set)
    await service.start()
    settle_heap()
    signalled = asyncio.ensure_future(stop_requested.wait())
    failed = asyncio.ensure_future(service.failed.wait())
    await asyncio.wait({signalled, failed}, return_when=asyncio.FIRST_COMPLETED)
    for waiter in (signalled, failed):
        waiter.cancel()
    if service.failed.is_set():
        log.error("stopping after a failure", extra={"service": service.name})
    else:
        log.info("shutdown requested", extra={"service": service.name})
    await service.stop()
    service.telemetry.shutdown()
    return 1 if service.failed.is_set() else 0


def run_service(settings: ServiceSettings, build: Callable[[ServiceSettings], Service]) -> None:
    """The body of every service's `main`: logging first, then build and serve."""
    configure_logging(
        settings.service_name, settings.telemetry.log_level, settings.telemetry.log_json
    )

    settle_in_this_process()

    async def build_and_serve() -> int:
        return await serve_until_signalled(build(settings))

    try:
        status = event_loop.run(build_and_serve(), settings.event_loop)
    except TlsNotConfigured as exc:
        log.error("refusing to start", extra={"reason": str(exc)})
        raise SystemExit(f"{settings.service_name}: {exc}") from None
    if status:
        raise SystemExit(status)
