"""The drift report of a model version's window, gathered from what every replica reads:
the version's checkpointed status (its latest window's tests and feature counts, its recent
metric windows), its kept alerts, and its reference profile."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from urllib.parse import quote, urlencode

from flywheel.drift.v1 import events_pb2 as events
from flywheel_common.errors import NotFound
from flywheel_drift import converters
from flywheel_drift.domain import Alert, DriftStatus
from flywheel_drift.profiles import ReferenceProfile
from flywheel_drift.queries import DriftQueries
from flywheel_drift.report import ReportInput, render
from flywheel_drift.storage import AlertFilter

log = logging.getLogger(__name__)

REPORTS_PATH = "/reports/"
ALERTS_SEARCHED = 500
"""The version's newest alerts searched for a window's alert."""


def report_path(model: str, version: int, window: int | None = None) -> str:
    """The path of a report, as the drift service's HTTP server serves it."""
    query = {"version": version} | ({"window": window} if window is not None else {})
    return f"{REPORTS_PATH}{quote(model, safe='')}?{urlencode(query)}"


def alert_report_path(alert: Alert) -> str:
    return report_path(alert.model, alert.version, alert.window.index if alert.window else None)


class Reports:
    def __init__(
        self,
        queries: DriftQueries,
        profile: Callable[[str, int], Awaitable[ReferenceProfile | None]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._queries = queries
        self._profile = profile
        self._clock = clock
        # One page at a time: matplotlib's settings are process-wide, and a page is a burst
        # of CPU that the detector's own work in this process should not queue behind twice.
        self._rendering = asyncio.Semaphore(1)

    async def page(self, model: str, version: int = 0, window: int | None = None) -> str:
        """The HTML report of `window` (default: the latest) of `version` (default: the
        newest seen). NotFound when the model, version or window is not known or kept."""
        return await self._render(await self.gather(model, version, window))

    async def gather(self, model: str, version: int = 0, window: int | None = None) -> ReportInput:
        statuses = await self._queries.statuses(model, version)
        if not statuses:
            raise NotFound(
                f"no predictions of {model!r}"
                + (f" version {version}" if version else "")
                + " have been seen yet"
            )
        status = converters.status_of(statuses[-1])
        alerts, _ = await self._queries.alerts(
            AlertFilter(model=model, version=status.version), 0, ALERTS_SEARCHED
        )
        profile, notes = await self._reference(status)
        part = _window_report(model, status, alerts, window)
        return replace(
            part,
            profile=profile,
            metrics=status.recent_metrics,
            generated_at=self._clock(),
            notes=(*notes, *part.notes),
        )

    async def _reference(
        self, status: DriftStatus
    ) -> tuple[ReferenceProfile | None, tuple[str, ...]]:
        try:
            return await self._profile(status.model, status.version), ()
        except Exception as error:  # the page still shows the tests and metrics
            log.warning("report without its reference", extra={"error": str(error)})
            return None, (f"The reference profile could not be loaded: {error}",)

    async def _render(self, report: ReportInput) -> str:
        async with self._rendering:
            return await asyncio.to_thread(render, report)


def _window_report(
    model: str, status: DriftStatus, alerts: list[events.DriftAlert], window: int | None
) -> ReportInput:
    """The window's part of its report: the latest window's, or the newest alerted one's,
    in full; an older alerted window's with the tests its alert reported. NotFound when the
    window is none of those."""
    latest = status.latest_window
    if window is None or (latest is not None and window == latest.index):
        alert = _alert_of(alerts, latest.index) if latest is not None else None
        return ReportInput(
            model, status.version, latest, status.findings, status.histograms, alert=alert
        )
    alert = _alert_of(alerts, window)
    alerted = status.alerted_window
    if alerted is not None and alerted.window.index == window:
        return ReportInput(
            model, status.version, alerted.window, alerted.findings, alerted.histograms,
            alert=alert,
        )  # fmt: skip
    if alert is None or alert.window is None:
        raise NotFound(
            f"window {window} of {model!r} version {status.version} is not kept: a report "
            f"covers the latest window ({latest.index if latest else 'none yet'}) and "
            "the windows that raised one of the newest alerts"
        )
    return ReportInput(
        model, status.version, alert.window, alert.findings, alert=alert,
        notes=(
            f"Window {window} is not the latest ({latest.index if latest else '-'}) nor the "
            "newest alerted one: its page shows the tests its alert reported, without the "
            "distributions.",
        ),
    )  # fmt: skip


def _alert_of(alerts: list[events.DriftAlert], window: int | None) -> Alert | None:
    for message in alerts:
        alert = converters.alert_of(message)
        if alert.window is not None and alert.window.index == window:
            return alert
    return None
