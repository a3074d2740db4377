"""The rendered overlays, once per session (the first render may build kustomize)."""

from __future__ import annotations

import pytest

from flywheel_testing.manifests import Rendered, render

OVERLAYS = ("dev", "prod")


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Rendered]:
    return {name: render(name, tmp_path_factory.mktemp(name)) for name in OVERLAYS}


@pytest.fixture(scope="session", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest, rendered: dict[str, Rendered]) -> Rendered:
    return rendered[request.param]


@pytest.fixture(scope="session")
def prod(rendered: dict[str, Rendered]) -> Rendered:
    return rendered["prod"]
