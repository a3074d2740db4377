"""The `flywheel.drift.p_value` gauge: each tested feature's adjusted p-value in its
version's latest window, for dashboards."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions
from opentelemetry.metrics import Observation as Reading

from flywheel_drift.handlers import Detector


def p_values(detector: Detector) -> Callable[[CallbackOptions], Iterable[Reading]]:
    def read(_: CallbackOptions) -> Iterable[Reading]:
        for status in detector.every_status():
            for finding in status.findings:
                if finding.adjusted_p_value is not None:
                    yield Reading(
                        finding.adjusted_p_value,
                        {
                            "model": status.model,
                            "version": str(status.version),
                            "feature": finding.feature,
                        },
                    )

    return read
