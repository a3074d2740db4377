"""A model version's checkpoint: its open window, prediction baseline, change detector and
status (the status as its VersionDriftStatus message), in the checkpoint format."""

from __future__ import annotations

import numpy as np

from flywheel.drift.v1.drift_pb2 import VersionDriftStatus
from flywheel_drift import checkpoints, converters
from flywheel_drift.concept import detector_from_checkpoint
from flywheel_drift.versions import VersionSnapshot
from flywheel_drift.windows import VersionWindows


def encode(snapshot: VersionSnapshot) -> bytes:
    status = converters.status_message(snapshot.status).SerializeToString()
    return checkpoints.encode(
        {
            "windows": snapshot.windows.checkpoint(),
            "concept": snapshot.concept.checkpoint(),
            "baseline_predictions": snapshot.baseline_predictions,
            "status": np.frombuffer(status, dtype=np.uint8),
        }
    )


def decode(model: str, version: int, data: bytes) -> VersionSnapshot:
    """A snapshot `encode` wrote (checkpoints refuse any other bytes)."""
    document = checkpoints.decode(data)
    status = VersionDriftStatus.FromString(document["status"].tobytes())
    return VersionSnapshot(
        windows=VersionWindows.from_checkpoint(model, version, document["windows"]),
        concept=detector_from_checkpoint(document["concept"]),
        baseline_predictions=dict(document["baseline_predictions"]),
        status=converters.status_of(status),
    )
