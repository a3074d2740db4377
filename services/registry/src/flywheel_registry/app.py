"""Composition root of the registry: settings in, a running service out."""

from __future__ import annotations

from functools import partial
from pathlib import Path

from flywheel.registry.v1 import registry_pb2_grpc
from flywheel_common.db import Database
from flywheel_common.foundation import Foundation
from flywheel_common.grpc_server import ServiceBinding
from flywheel_common.publisher import EventPublisher
from flywheel_common.service import Component, Service, run_service
from flywheel_common.settings import ServiceSettings
from flywheel_common.topics import DEPLOYMENT_EVENTS
from flywheel_registry.artifacts import DatabaseBlobStore, LocalBlobStore, S3BlobStore
from flywheel_registry.consumers import rollback_follower
from flywheel_registry.grpc_api import METHOD_ROLES, METHOD_SCOPES, SERVICE_NAME, RegistryServicer
from flywheel_registry.handlers.ports import BlobStore, Deps, RegistryLimits
from flywheel_registry.onnx_validation import GraphLimits, OnnxValidator
from flywheel_registry.settings import RegistrySettings
from flywheel_registry.storage import RegistryUnitOfWork

MIGRATIONS = Path(__file__).with_name("migrations")


def artifact_store(config: RegistrySettings, database: Database) -> BlobStore:
    if config.artifact_store == "database":
        return DatabaseBlobStore(database, config.data_dir / "spool", config.download_chunk_bytes)
    if config.artifact_store == "s3":
        return S3BlobStore(config.s3, config.data_dir / "spool")
    return LocalBlobStore(config.artifact_folder())


def build(
    settings: ServiceSettings | None = None,
    *,
    blobs: BlobStore | None = None,
    publisher: EventPublisher | None = None,
) -> Service:
    """Wire the registry: database and artifacts, outbox relay, rollback follower, gRPC.
    `blobs` and `publisher` replace the artifact store and the Kafka publisher."""
    config = settings if isinstance(settings, RegistrySettings) else RegistrySettings()
    foundation = Foundation(config, MIGRATIONS, publisher)
    validator = OnnxValidator(
        config.validation_timeout_seconds,
        limits=GraphLimits(config.max_graph_nodes, config.max_tensor_elements),
    )
    store = blobs or artifact_store(config, foundation.database)
    deps = Deps(
        unit_of_work=partial(RegistryUnitOfWork, foundation.database, foundation.outbox),
        blobs=store,
        validator=validator,
        limits=RegistryLimits(
            max_artifact_bytes=config.max_artifact_bytes,
            max_reference_sample_bytes=config.max_reference_sample_bytes,
            default_protected_aliases=frozenset(config.protected_aliases),
            chunk_bytes=config.download_chunk_bytes,
        ),
    )
    components: list[Component] = [
        *foundation.components(),
        *([store] if isinstance(store, S3BlobStore) else []),  # its client opens and closes
        validator,
        # A first start follows rollbacks from now on: those in the topic's history were
        # applied by whoever ran then, or are of models this registry never held.
        foundation.consumer(
            [DEPLOYMENT_EVENTS.name], rollback_follower(deps), from_beginning=False
        ),
    ]
    binding = ServiceBinding(
        SERVICE_NAME,
        registry_pb2_grpc.add_RegistryServiceServicer_to_server,
        RegistryServicer(deps),
        METHOD_ROLES,
        METHOD_SCOPES,
    )
    return Service(config, [binding], components)


def main() -> None:
    run_service(RegistrySettings(), build)
