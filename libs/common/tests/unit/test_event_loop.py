"""Services run on uvloop unless asyncio's own loop is chosen, by one setting."""

import asyncio

import pytest
import uvloop
from pydantic_settings import SettingsConfigDict

from flywheel_common.event_loop import EventLoop, run
from flywheel_common.settings import ServiceSettings


class ExampleSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_EXAMPLE_")


async def running_loop() -> asyncio.AbstractEventLoop:
    await asyncio.sleep(0)
    return asyncio.get_running_loop()


def test_a_service_runs_on_uvloop_unless_told_otherwise() -> None:
    choice = ExampleSettings().event_loop
    assert choice is EventLoop.UVLOOP
    assert isinstance(run(running_loop(), choice), uvloop.Loop)


def test_asyncio_own_loop_is_one_setting_away(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_EXAMPLE_EVENT_LOOP", "asyncio")
    choice = ExampleSettings().event_loop
    assert choice is EventLoop.ASYNCIO
    loop = run(running_loop(), choice)
    assert isinstance(loop, asyncio.BaseEventLoop)
    assert not isinstance(loop, uvloop.Loop)


def test_an_unknown_loop_is_refused_with_the_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLYWHEEL_EXAMPLE_EVENT_LOOP", "trio")
    with pytest.raises(ValueError, match="'uvloop' or 'asyncio'"):
        ExampleSettings()


def test_run_returns_the_coroutine_result_and_closes_its_loop() -> None:
    loop = run(running_loop())
    assert loop.is_closed()
