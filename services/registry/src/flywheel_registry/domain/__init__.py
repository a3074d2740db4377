"""The registry's domain: rules, models and versions, the events their changes cause, page
tokens and search queries. Free of storage and transport: a use case loads a model through
the unit of work, calls a method of it (which checks its rules and records its events), and
the unit of work stores the result with its events in one transaction."""

from flywheel_common.names import NAME_PATTERN, check_name
from flywheel_registry.domain.events import (
    AliasChange,
    AliasChanged,
    Cause,
    ModelVersionArchived,
    ModelVersionPromoted,
    ModelVersionRegistered,
    RegistryEvent,
)
from flywheel_registry.domain.model import (
    AliasPointer,
    Caller,
    ModelSummary,
    RegisteredModel,
    VersionView,
)
from flywheel_registry.domain.paging import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    decode_page_token,
    encode_page_token,
    page_size,
    query_fingerprint,
)
from flywheel_registry.domain.rules import (
    MAX_MAP_ENTRIES,
    MAX_TEXT,
    PRODUCTION,
    REFERENCE_SAMPLE_DATATYPES,
    SHA256_PATTERN,
    NewVersion,
    ReferenceSampleLayout,
    ValidatedModel,
    check_compatible_with_production,
    check_key,
    check_sha256,
    check_text,
    check_version,
    signature_incompatibilities,
)
from flywheel_registry.domain.search import MetricCondition, OrderKey, SearchQuery
from flywheel_registry.domain.versions import Artifact, ModelVersion, ReferenceSample

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_MAP_ENTRIES",
    "MAX_PAGE_SIZE",
    "MAX_TEXT",
    "NAME_PATTERN",
    "PRODUCTION",
    "REFERENCE_SAMPLE_DATATYPES",
    "SHA256_PATTERN",
    "AliasChange",
    "AliasChanged",
    "AliasPointer",
    "Artifact",
    "Caller",
    "Cause",
    "MetricCondition",
    "ModelSummary",
    "ModelVersion",
    "ModelVersionArchived",
    "ModelVersionPromoted",
    "ModelVersionRegistered",
    "NewVersion",
    "OrderKey",
    "ReferenceSample",
    "ReferenceSampleLayout",
    "RegisteredModel",
    "RegistryEvent",
    "SearchQuery",
    "ValidatedModel",
    "VersionView",
    "check_compatible_with_production",
    "check_key",
    "check_name",
    "check_sha256",
    "check_text",
    "check_version",
    "decode_page_token",
    "encode_page_token",
    "page_size",
    "query_fingerprint",
    "signature_incompatibilities",
]
