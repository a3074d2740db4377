"""The training job of the loop benchmark (bench/loop_quality.py): one scikit-learn model for
every line of the comparison, and the entrypoint the retrain trigger runs.

    python bench/loop_training.py        # started by the retrain trigger only

It fits a gradient-boosted tree classifier on the newest `RECENT_ROWS` rows of the dataset
the run prepared (the trigger's dataset is the production version's training data followed
by the logged, labelled predictions, oldest first): on a drifting stream the newest rows are
the current concept. The model goes to ONNX and is registered as the run's candidate with
its lineage through the SDK, as `flywheel_examples.breast_cancer` does.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from flywheel_examples.breast_cancer import Dataset, code_version, read_csv
from sklearn.ensemble import HistGradientBoostingClassifier
from threadpoolctl import threadpool_limits

from flywheel_common.telemetry import continued_trace
from flywheel_common.training import TrainingResult, TrainingRun
from flywheel_sdk import Lineage, Registry, register

ENTRYPOINT = f"{sys.executable} {Path(__file__).resolve()}"
RECENT_ROWS = 2000
"""Rows a model learns from at most: the newest ones it is given (the oracle's 2,000 after a
change)."""
WINDOWS = (250, 500, 1000, 2000)
VALIDATION_ROWS = 200
REFERENCE_ROWS = 1000


def fit(features: np.ndarray, labels: np.ndarray) -> HistGradientBoostingClassifier:
    """The model every line of the benchmark uses: fitted on the newest rows, as far back
    as `window` finds useful (at most `RECENT_ROWS`)."""
    with threadpool_limits(1):  # the platform's services share two cores with the fits
        rows = window(features, labels)
        return _model().fit(features[-rows:].astype(np.float32), labels[-rows:])


def window(features: np.ndarray, labels: np.ndarray) -> int:
    """How many of the newest rows to learn from: of `WINDOWS`, the one whose model,
    fitted on the rows just before the newest `VALIDATION_ROWS`, predicts those best (the
    longest on a tie). After a change of concept only the rows since the change help."""
    longest = min(len(labels), RECENT_ROWS)
    if len(labels) < 2 * VALIDATION_ROWS:
        return longest
    held_x = features[-VALIDATION_ROWS:].astype(np.float32)
    held_y = labels[-VALIDATION_ROWS:]
    best, best_score = longest, -1.0
    for rows in WINDOWS:
        rows = min(rows, len(labels) - VALIDATION_ROWS)
        fit_y = labels[-VALIDATION_ROWS - rows : -VALIDATION_ROWS]
        if len(np.unique(fit_y)) < 2:
            continue
        fit_x = features[-VALIDATION_ROWS - rows : -VALIDATION_ROWS].astype(np.float32)
        score = float((_model().fit(fit_x, fit_y).predict(held_x) == held_y).mean())
        if score >= best_score:
            best, best_score = min(rows + VALIDATION_ROWS, RECENT_ROWS), score
    return best


def _model() -> HistGradientBoostingClassifier:
    return HistGradientBoostingClassifier(max_iter=100, random_state=0)


def register_fitted(
    name: str,
    dataset: Dataset,
    fitted: HistGradientBoostingClassifier,
    lineage: Lineage,
    aliases: list[str],
    registry: Registry,
    idempotency_key: str = "",
) -> int:
    """The model through the SDK (ONNX, checked against the fitted model); its reference
    sample is the newest rows it learned from."""
    registered = register(
        fitted,
        name,
        reference=dataset.features[-REFERENCE_ROWS:],
        feature_names=dataset.feature_names,
        description="gradient-boosted trees on a synthetic concept-drift stream",
        params={"estimator": "hist_gradient_boosting", "rows": str(len(dataset.labels))},
        lineage=lineage,
        aliases=aliases,
        idempotency_key=idempotency_key,
        registry=registry,
    )
    return registered.version


def retrain(run: TrainingRun) -> int:
    dataset = read_csv(Path(run.dataset_path))
    fitted = fit(dataset.features, dataset.labels)
    lineage = run.lineage(code_version(), ENTRYPOINT)
    registry = Registry(run.registry_address, run.registry_tls(), run.registry_token)
    with continued_trace(run.traceparent):
        version = register_fitted(
            run.model, dataset, fitted, lineage, [run.alias], registry, run.idempotency_key
        )
    TrainingResult(run.model, version).write(Path(run.output_dir))
    print(f"run {run.run_id}: {len(dataset.labels)} rows given, registered version {version}")
    return version


def main() -> None:
    run = TrainingRun.from_environment()
    if run is None:
        sys.exit("bench/loop_training.py is started by the retrain trigger (FLYWHEEL_TRAINING_*)")
    retrain(run)


if __name__ == "__main__":
    main()
