"""A model version's checkpoint: its open window, prediction baseline, change detector,
status (as its VersionDriftStatus message) and the windows waiting for the reference, in the
checkpoint format."""

from __future__ import annotations

from typing import Any

import numpy as np

from flywheel.drift.v1.drift_pb2 import VersionDriftStatus
from flywheel_drift import checkpoints, converters
from flywheel_drift.concept import detector_from_checkpoint
from flywheel_drift.performance import Calibration, ErrorScale
from flywheel_drift.versions import VersionSnapshot
from flywheel_drift.windows import ClosedWindow, VersionWindows


def encode(snapshot: VersionSnapshot, status: bytes | None = None) -> bytes:
    """`status`: the snapshot's status as a serialized VersionDriftStatus, when the caller
    has it already (a checkpoint writes it beside the snapshot too)."""
    if status is None:
        status = converters.status_message(snapshot.status).SerializeToString()
    return checkpoints.encode(
        {
            "windows": snapshot.windows.checkpoint(),
            "concept": snapshot.concept.checkpoint(),
            "baseline_predictions": snapshot.baseline_predictions,
            "status": np.frombuffer(status, dtype=np.uint8),
            "untested": [_untested(window) for window in snapshot.untested],
            "drifted": list(snapshot.drifted),
            "calibration": snapshot.calibration.checkpoint(),
            "error_scale": snapshot.error_scale.checkpoint(),
        }
    )


def _untested(window: ClosedWindow) -> dict[str, Any]:
    """What testing a window against the reference needs: its bounds and inputs."""
    return {
        "index": window.index,
        "start": window.start,
        "end": window.end,
        "timed": window.timed,
        "features": window.features,
        "traceparent": window.traceparent,
    }


def _untested_window(model: str, version: int, document: dict[str, Any]) -> ClosedWindow:
    return ClosedWindow(
        model=model,
        version=version,
        index=document["index"],
        start=document["start"],
        end=document["end"],
        requests=0,
        errors=0,
        nan_flagged=0,
        features=document["features"],
        predictions={},
        latencies_ms=np.empty(0),
        timed=document["timed"],
        traceparent=document.get("traceparent", ""),
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
        untested=tuple(
            _untested_window(model, version, window) for window in document.get("untested", [])
        ),
        drifted=tuple(bool(d) for d in document.get("drifted", [])),
        calibration=Calibration.from_checkpoint(document.get("calibration")),
        error_scale=ErrorScale.from_checkpoint(document.get("error_scale")),
    )
