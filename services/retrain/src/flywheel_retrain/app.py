"""Composition root of the retrain service: settings in, a running service out."""

from __future__ import annotations

from flywheel_common.service import Service, TopicProvisioner, run_service
from flywheel_common.settings import ServiceSettings
from flywheel_retrain.settings import RetrainSettings


def build(settings: ServiceSettings | None = None) -> Service:
    """Wire the retrain service; its business RPCs arrive with their own issue."""
    settings = settings or RetrainSettings()
    components = [TopicProvisioner(settings)] if settings.kafka.provision_topics else []
    return Service(settings, bindings=[], components=components)


def main() -> None:
    run_service(RetrainSettings(), build)
