"""The `flywheel.drift.p_value` gauge: each tested feature's adjusted data-drift p-value in
its version's latest window, for dashboards (of the versions this replica watches)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from opentelemetry.metrics import CallbackOptions
from opentelemetry.metrics import Observation as Reading

from flywheel_drift.detection import Kind
from flywheel_drift.partitions import Partitions


def p_values(partitions: Partitions) -> Callable[[CallbackOptions], Iterable[Reading]]:
    def read(_: CallbackOptions) -> Iterable[Reading]:
        for status in partitions.every_status():
            for finding in status.findings:
                if finding.kind is Kind.DATA and finding.adjusted_p_value is not None:
                    yield Reading(
                        finding.adjusted_p_value,
                        {
                            "model": status.model,
                            "version": str(status.version),
                            "feature": finding.feature,
                        },
                    )

    return read
