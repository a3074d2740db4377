"""Composition root of the gateway service: settings in, a running service out."""

from __future__ import annotations

from flywheel_common.service import Service, TopicProvisioner, run_service
from flywheel_common.settings import ServiceSettings
from flywheel_gateway.settings import GatewaySettings


def build(settings: ServiceSettings | None = None) -> Service:
    """Wire the gateway service; its business RPCs arrive with their own issue."""
    settings = settings or GatewaySettings()
    components = [TopicProvisioner(settings)] if settings.kafka.provision_topics else []
    return Service(settings, bindings=[], components=components)


def main() -> None:
    run_service(GatewaySettings(), build)
