"""The messages of a RegisterModelVersion stream, for training jobs and tests alike."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from flywheel.registry.v1 import registry_pb2 as registry_pb
from flywheel.registry.v1 import types_pb2 as registry_types


def registration(
    model: str,
    artifact: bytes,
    *,
    sample: bytes | None = None,
    n_features: int = 4,
    digests: bool = True,
    chunk: int = 700,
    feature_names: Sequence[str] | None = None,
    **fields: Any,
) -> list[registry_pb.RegisterModelVersionRequest]:
    """The messages of one RegisterModelVersion stream, in protocol order: metadata
    (`fields` are RegistrationMetadata fields), artifact chunks, the optional FP32 reference
    sample `[rows, n_features]` and the sha256 digests."""
    if sample is not None:
        fields["reference_sample"] = registry_types.ReferenceSampleSpec(
            datatype="FP32",
            shape=[len(sample) // (4 * n_features), n_features],
            feature_names=list(feature_names or [f"f{i}" for i in range(n_features)]),
            input_name="features",
        )
    messages = [
        registry_pb.RegisterModelVersionRequest(
            metadata=registry_pb.RegistrationMetadata(model=model, **fields)
        )
    ]
    messages += [
        registry_pb.RegisterModelVersionRequest(artifact_chunk=artifact[i : i + chunk])
        for i in range(0, len(artifact), chunk)
    ]
    if sample is not None:
        messages += [
            registry_pb.RegisterModelVersionRequest(reference_sample_chunk=sample[i : i + 4096])
            for i in range(0, len(sample), 4096)
        ]
    if digests:
        messages.append(
            registry_pb.RegisterModelVersionRequest(
                expected_digests=registry_pb.ExpectedDigests(
                    artifact_sha256=hashlib.sha256(artifact).hexdigest(),
                    reference_sample_sha256=hashlib.sha256(sample).hexdigest() if sample else "",
                )
            )
        )
    return messages
