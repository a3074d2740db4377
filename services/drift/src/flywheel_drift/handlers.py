"""The drift detector's use case: predictions and labels in, windows and alerts out.

Transport-free: the stream layer converts each batch it decodes into the domain and
publishes the events that come back. Per model version it keeps a `VersionState` (its
reference profile asked for on first sight, usually prefetched on the version's promotion
already; the windows that close before it arrives are tested when it does); across
versions, the label join. The stream runs one detector per partition it holds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import replace

from flywheel_common.errors import NotFound
from flywheel_drift.domain import Alert, DriftEvent, DriftStatus, ModelMonitor, PredictionBatch
from flywheel_drift.profiles import ReferenceProfile
from flywheel_drift.versions import VersionSnapshot, VersionState
from flywheel_drift.windows import ClosedWindow, LabelJoin, Pending

log = logging.getLogger(__name__)

LoadProfile = Callable[[str, int], Awaitable[ReferenceProfile | None]]


class Detector:
    def __init__(
        self,
        load_profile: LoadProfile,
        monitors: Callable[[str], ModelMonitor],
        label_wait_seconds: float = 3600.0,
        clock: Callable[[], float] = time.time,
        report_link: Callable[[Alert], str] | None = None,
    ) -> None:
        """`report_link`: the address of an alert's HTML report, which the alert carries."""
        self._load_profile = load_profile
        self._report_link = report_link
        self._monitors = monitors
        self._clock = clock
        self._versions: dict[tuple[str, int], VersionState] = {}
        self.changed: set[tuple[str, int]] = set()
        """Versions whose state changed since the stream last checkpointed them."""
        self._join = LabelJoin(label_wait_seconds)
        self._loading: set[asyncio.Task[None]] = set()

    def state(self, model: str, version: int) -> VersionState:
        key = (model, version)
        found = self._versions.get(key)
        if found is None:
            found = VersionState.new(model, version, self._monitors(model))
            self._versions[key] = found
        if not found.profile_requested:
            found.profile_requested = True
            task = asyncio.create_task(self._fetch_profile(found))
            self._loading.add(task)
            task.add_done_callback(self._loading.discard)
        return found

    async def _fetch_profile(self, state: VersionState) -> None:
        try:
            state.profiled(await self._load_profile(state.model, state.version))
            self.changed.add((state.model, state.version))  # its status says so
        except NotFound:
            log.info("no reference sample", extra={"model": state.model, "version": state.version})
            state.profiled(None)
        except Exception as exc:
            log.warning("reference sample not loaded; retrying with the next batch",
                        extra={"model": state.model, "error": str(exc)})  # fmt: skip
            state.profile_requested = False

    def observe(self, batches: Sequence[PredictionBatch]) -> list[DriftEvent]:
        """Batches of predictions; returns the events of the windows they closed and of
        concept drift found by labels that were waiting for these predictions."""
        outgoing = self._test_untested()
        for batch in batches:
            if batch.shadow:
                continue
            model, version, seen = batch.model, batch.version, batch.observations
            confidence: list[float | None] = (
                [c if math.isfinite(c) else None for c in seen.confidence.tolist()]
                if len(seen.confidence)
                else [None] * len(seen)
            )
            waiting = [
                (request_id, Pending(model, version, prediction, received, confident))
                for request_id, prediction, received, failed, confident in zip(
                    seen.request_ids,
                    seen.predictions,
                    seen.received_at.tolist(),
                    seen.failed.tolist(),
                    confidence,
                    strict=True,
                )
                if request_id and not failed
            ]
            for joined in self._join.predictions(waiting):
                outgoing += self._score(*joined)
            state = self.state(model, version)
            self.changed.add((model, version))
            for window in state.windows.add(seen):
                outgoing += self._close(state, window)
        return self._linked(outgoing)

    def flush(self, now: float, grace: float = 0.0) -> list[DriftEvent]:
        """Close the time windows whose end passed more than `grace` seconds ago though no
        prediction came since (a model whose traffic stopped still reports its last window),
        and forget predictions and labels that waited past the label wait."""
        outgoing = self._test_untested()
        for key, state in list(self._versions.items()):
            for window in state.windows.flush(now, grace):
                self.changed.add(key)
                outgoing += self._close(state, window)
        self._join.expire(now)
        return self._linked(outgoing)

    def label(self, request_id: str, label: str, at: float) -> list[DriftEvent]:
        """A prediction's ground truth, scored now or when its prediction arrives."""
        joined = self._join.label(request_id, label, at)
        self._join.expire(at)
        if joined is None:
            return []
        return self._linked(self._score(*joined))

    def _score(self, pending: Pending, label: str) -> list[DriftEvent]:
        state = self.state(pending.model, pending.version)
        self.changed.add((pending.model, pending.version))
        task = self._monitors(pending.model).task
        alert = state.score(
            pending.prediction,
            label,
            pending.confidence,
            task,
            self._clock(),
            pending.received_at,
        )
        return [] if alert is None else [alert]

    def _test_untested(self) -> list[DriftEvent]:
        """The alerts of windows that closed before their reference was loaded, now that it
        is (the stream calls `observe` or `flush` every few hundred milliseconds)."""
        outgoing: list[DriftEvent] = []
        for key, state in list(self._versions.items()):
            if state.untested and state.profile_known:
                self.changed.add(key)
                monitor = self._monitors(state.model).detection
                outgoing += state.test_untested(monitor, self._clock())
        return outgoing

    def _close(self, state: VersionState, window: ClosedWindow) -> list[DriftEvent]:
        monitor = self._monitors(state.model)
        return state.close(window, monitor.detection, monitor.task, self._clock())

    def _linked(self, events: list[DriftEvent]) -> list[DriftEvent]:
        if self._report_link is None:
            return events
        link = self._report_link
        return [replace(e, report_url=link(e)) if isinstance(e, Alert) else e for e in events]

    def snapshot(self, model: str, version: int) -> VersionSnapshot:
        """What a restart needs of a version the detector has seen."""
        return self._versions[(model, version)].snapshot()

    def restore(self, model: str, version: int, snapshot: VersionSnapshot) -> None:
        """Resume a version from its checkpoint."""
        self.state(model, version).resume(snapshot)

    @property
    def join(self) -> LabelJoin:
        """Predictions and labels waiting for each other; the stream checkpoints its
        changes with the windows and replays them on restart."""
        return self._join

    def every_status(self) -> Iterator[DriftStatus]:
        """The status of every version seen (for the gauges)."""
        for state in list(self._versions.values()):
            yield state.status
