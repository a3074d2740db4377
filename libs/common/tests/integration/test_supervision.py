"""A service whose long-running component dies stops reporting SERVING and exits non-zero."""

import asyncio

from flywheel_common.healthcheck import is_serving
from flywheel_common.service import Service, serve_until_signalled
from flywheel_common.settings import AuthSettings, ServiceSettings, TelemetrySettings
from flywheel_testing.tls import grpc_settings, pki


class LoopThatFails:
    """A component whose background loop raises once it is told to."""

    def __init__(self) -> None:
        self.fail = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="failing-loop")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        await self.fail.wait()
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte")


def _settings() -> ServiceSettings:
    return ServiceSettings(
        service_name="supervised",
        grpc=grpc_settings(port=0),
        telemetry=TelemetrySettings(metrics_port=-1, log_level="WARNING"),
        auth=AuthSettings(allow_anonymous=True),
    )


async def test_a_dead_component_turns_health_not_serving_and_ends_serving_with_status_1() -> None:
    component = LoopThatFails()
    service = Service(_settings(), [], [component])
    serving = asyncio.create_task(serve_until_signalled(service))
    async with asyncio.timeout(20):
        while not service.grpc.port or not await is_serving(
            service.grpc.address, pki().client_tls()
        ):
            await asyncio.sleep(0.05)
    address = service.grpc.address

    component.fail.set()
    async with asyncio.timeout(20):
        status = await serving
    assert status == 1
    assert "LoopThatFails (failing-loop) ended: UnicodeDecodeError" in service.failure
    assert not await is_serving(address, pki().client_tls(), timeout=1.0)


async def test_a_component_stopped_by_the_service_is_not_a_failure() -> None:
    component = LoopThatFails()
    service = Service(_settings(), [], [component])
    await service.start()
    assert await is_serving(service.grpc.address, pki().client_tls())
    await service.stop()
    assert not service.failed.is_set()
