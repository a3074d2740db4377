"""Monitor configurations per model: the MonitorConfig contract and the detector's rules."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

import numpy as np

from flywheel.drift.v1 import types_pb2 as types
from flywheel_common.auth import current_principal
from flywheel_common.db import Database
from flywheel_common.errors import InvalidArgument, NotFound
from flywheel_common.names import check_name
from flywheel_common.registry_client import RegistryClient
from flywheel_common.signatures import NUMPY_DTYPES
from flywheel_common.timestamps import check_times, seconds_of
from flywheel_drift import storage
from flywheel_drift.detection import (
    ALL_TESTS,
    MAX_ALARM_WINDOWS,
    AlarmPolicy,
    DriftTest,
    Monitor,
    Severity,
    Thresholds,
)
from flywheel_drift.domain import ModelMonitor
from flywheel_drift.performance import Task
from flywheel_drift.profiles import ReferenceProfile, build_profile
from flywheel_drift.statistics import Correction
from flywheel_drift.windows import WindowPolicy

log = logging.getLogger(__name__)

_TESTS = {
    types.DRIFT_TEST_KOLMOGOROV_SMIRNOV: DriftTest.KOLMOGOROV_SMIRNOV,
    types.DRIFT_TEST_CHI_SQUARE: DriftTest.CHI_SQUARE,
    types.DRIFT_TEST_POPULATION_STABILITY_INDEX: DriftTest.POPULATION_STABILITY_INDEX,
    types.DRIFT_TEST_WASSERSTEIN: DriftTest.WASSERSTEIN,
    types.DRIFT_TEST_JENSEN_SHANNON: DriftTest.JENSEN_SHANNON,
    types.DRIFT_TEST_NAN_RATE: DriftTest.NAN_RATE,
    types.DRIFT_TEST_INF_RATE: DriftTest.INF_RATE,
    types.DRIFT_TEST_OUT_OF_RANGE_RATE: DriftTest.OUT_OF_RANGE_RATE,
    types.DRIFT_TEST_SCHEMA_CHANGE: DriftTest.SCHEMA_CHANGE,
}
_CORRECTIONS = {
    types.MULTIPLE_TESTING_CORRECTION_UNSPECIFIED: Correction.BENJAMINI_HOCHBERG,
    types.MULTIPLE_TESTING_CORRECTION_NONE: Correction.NONE,
    types.MULTIPLE_TESTING_CORRECTION_BONFERRONI: Correction.BONFERRONI,
    types.MULTIPLE_TESTING_CORRECTION_BENJAMINI_HOCHBERG: Correction.BENJAMINI_HOCHBERG,
}


def monitor_of(config: types.MonitorConfig, default_window: int) -> ModelMonitor:
    """The detector's rules for a config; every invalid field is named in the error."""
    thresholds = config.thresholds
    alpha = thresholds.alpha if thresholds.HasField("alpha") else 0.01
    if not 0 < alpha < 1:
        raise InvalidArgument(f"thresholds.alpha must be in (0, 1), got {alpha}")
    window = WindowPolicy(size=default_window)
    if config.window.kind == types.WINDOW_KIND_COUNT:
        if config.window.size_count < 10:
            raise InvalidArgument("window.size_count must be at least 10 predictions")
        window = WindowPolicy(size=config.window.size_count)
    elif config.window.kind == types.WINDOW_KIND_TIME:
        seconds = seconds_of(config.window.size_duration, "window.size_duration")
        if seconds < 1:
            raise InvalidArgument("window.size_duration must be at least one second")
        window = WindowPolicy(seconds=seconds)
    unknown = [t for t in config.tests if t not in _TESTS]
    if unknown:
        raise InvalidArgument(f"unknown drift tests {unknown}; use the DriftTest values")
    if config.correction not in _CORRECTIONS:
        raise InvalidArgument(
            f"correction {config.correction} is not a MultipleTestingCorrection value"
        )
    if config.min_alert_severity not in Severity._value2member_map_:
        raise InvalidArgument(f"min_alert_severity {config.min_alert_severity} is not a Severity")
    concept = config.concept_drift
    detector = "page_hinkley" if concept.detector == types.DRIFT_TEST_PAGE_HINKLEY else "adwin"
    alarm = _alarm_of(config.alarm)
    if config.task_type not in _TASKS:
        raise InvalidArgument(
            f"task_type {config.task_type} is not a TaskType: use TASK_TYPE_CLASSIFICATION "
            "or TASK_TYPE_REGRESSION"
        )
    defaults = Thresholds()
    return ModelMonitor(
        detection=Monitor(
            tests=frozenset(_TESTS[t] for t in config.tests) or ALL_TESTS,
            thresholds=Thresholds(
                alpha=alpha,
                psi=thresholds.psi if thresholds.HasField("psi") else None,
                wasserstein=thresholds.wasserstein if thresholds.HasField("wasserstein") else None,
                jensen_shannon=(
                    thresholds.jensen_shannon if thresholds.HasField("jensen_shannon") else None
                ),
                nan_rate=thresholds.nan_rate
                if thresholds.HasField("nan_rate")
                else defaults.nan_rate,
                inf_rate=thresholds.inf_rate
                if thresholds.HasField("inf_rate")
                else defaults.inf_rate,
                out_of_range_rate=(
                    thresholds.out_of_range_rate
                    if thresholds.HasField("out_of_range_rate")
                    else defaults.out_of_range_rate
                ),
            ),
            correction=_CORRECTIONS[config.correction],
            min_alert_severity=Severity(config.min_alert_severity or Severity.MEDIUM),
            alarm=alarm,
        ),
        window=window,
        concept_detector=detector,
        label_wait_seconds=(seconds_of(concept.label_wait, "concept_drift.label_wait") or 3600.0),
        task=_TASKS[config.task_type],
    )


_TASKS = {
    types.TASK_TYPE_UNSPECIFIED: Task.CLASSIFICATION,
    types.TASK_TYPE_CLASSIFICATION: Task.CLASSIFICATION,
    types.TASK_TYPE_REGRESSION: Task.REGRESSION,
}


def _alarm_of(alarm: types.AlarmPolicy) -> AlarmPolicy:
    drifted = alarm.drifted_windows or 1
    windows = alarm.of_windows or drifted
    if not 1 <= drifted <= windows <= MAX_ALARM_WINDOWS:
        raise InvalidArgument(
            f"alarm must have 1 <= drifted_windows <= of_windows <= {MAX_ALARM_WINDOWS}, got "
            f"drifted_windows={alarm.drifted_windows} of_windows={alarm.of_windows}"
        )
    return AlarmPolicy(drifted, windows)


class MonitorConfigs:
    """Monitor configs by model, with compare-and-set revisions, stored in the detector's
    database and cached in memory (the stream asks for a model's rules on every batch).

    Any replica may store a config, and the replica holding the model's partition applies
    it: every replica reads the stored configs again every `refresh_seconds`."""

    def __init__(
        self, default_window: int, database: Database, refresh_seconds: float = 1.0
    ) -> None:
        self._default_window = default_window
        self._database = database
        self._refresh_seconds = refresh_seconds
        self._configs: dict[str, types.MonitorConfig] = {}
        self._monitors: dict[str, ModelMonitor] = {}
        self._task: asyncio.Task[None] | None = None

    @property
    def task(self) -> asyncio.Task[None] | None:
        """The refreshing loop, watched by the service's supervisor."""
        return self._task

    async def start(self) -> None:
        """Load the stored configs (a service component, after the schema migration), then
        follow them."""
        await self.reload()
        self._task = asyncio.create_task(self._follow(), name="monitor-configs")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def reload(self) -> None:
        """Apply the configs stored since the last look, by this replica or another."""
        async with self._database.transaction() as session:
            stored = await storage.MONITOR_CONFIGS.every(session)
        for config in stored:
            known = self._configs.get(config.model)
            if known is None or known.revision != config.revision:
                self._configs[config.model] = config
                self._monitors[config.model] = monitor_of(config, self._default_window)

    async def _follow(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            try:
                await self.reload()
            except Exception:  # the database is away: go on with the configs known
                log.warning("monitor configs not refreshed", exc_info=True)

    def get(self, model: str) -> tuple[types.MonitorConfig, bool]:
        stored = self._configs.get(model)
        if stored is not None:
            return stored, False
        return types.MonitorConfig(model=model), True

    def monitor(self, model: str) -> ModelMonitor:
        found = self._monitors.get(model)
        if found is None:
            found = monitor_of(self.get(model)[0], self._default_window)
            self._monitors[model] = found
        return found

    async def set(
        self, config: types.MonitorConfig, expected_revision: int | None
    ) -> types.MonitorConfig:
        check_name("config.model", config.model)
        check_times(config)  # stored as JSON whole, including fields this kind does not read
        monitor = monitor_of(config, self._default_window)  # validate before storing anything
        async with self._database.transaction() as session:
            stored = await storage.MONITOR_CONFIGS.put(
                session, config, expected_revision, current_principal().subject, datetime.now(UTC)
            )
        self._configs[config.model] = stored
        self._monitors[config.model] = monitor
        return stored


async def load_profile(
    registry: RegistryClient, configs: MonitorConfigs, model: str, version: int
) -> ReferenceProfile:
    """The version's reference sample from the registry, profiled; NotFound without one."""
    info, data = await registry.reference_sample(model, version)
    spec = info.spec
    dtype = NUMPY_DTYPES.get(spec.datatype)
    if dtype is None or spec.datatype == "BYTES" or len(spec.shape) != 2:
        raise NotFound(f"{model} v{version}: the reference sample is not a numeric matrix")
    matrix = np.frombuffer(data, dtype=dtype).reshape(tuple(spec.shape))
    config, _ = configs.get(model)
    return build_profile(
        model,
        version,
        matrix,
        list(spec.feature_names) or None,
        categorical=set(config.categorical_features),
        datatype=spec.datatype,
    )
