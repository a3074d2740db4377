"""Composition root of the deployer service: settings in, a running service out."""

from __future__ import annotations

from flywheel_common.service import Service, TopicProvisioner, run_service
from flywheel_common.settings import ServiceSettings
from flywheel_deployer.settings import DeployerSettings


def build(settings: ServiceSettings | None = None) -> Service:
    """Wire the deployer service; its business RPCs arrive with their own issue."""
    settings = settings or DeployerSettings()
    components = [TopicProvisioner(settings)] if settings.kafka.provision_topics else []
    return Service(settings, bindings=[], components=components)


def main() -> None:
    run_service(DeployerSettings(), build)
