"""Gate metrics equal scikit-learn's; datasets join, hold out and hash deterministically."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score, mean_absolute_error, mean_squared_error

from flywheel_retrain import datasets
from flywheel_retrain.datasets import LoggedPrediction
from flywheel_retrain.evaluation import METRICS, metric_named


def test_metrics_equal_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    truth = rng.integers(0, 3, 500)
    guess = np.where(rng.random(500) < 0.7, truth, rng.integers(0, 3, 500))
    as_text = [str(v) for v in truth], [str(v) for v in guess]
    assert METRICS["accuracy"].score(*as_text) == pytest.approx(accuracy_score(truth, guess))
    assert METRICS["f1"].score(*as_text) == pytest.approx(f1_score(truth, guess, average="macro"))
    values, predicted = rng.normal(size=200), rng.normal(size=200)
    numbers = [repr(float(v)) for v in values], [repr(float(v)) for v in predicted]
    assert METRICS["mae"].score(*numbers) == pytest.approx(mean_absolute_error(values, predicted))
    assert METRICS["rmse"].score(*numbers) == pytest.approx(
        np.sqrt(mean_squared_error(values, predicted))
    )
    assert not METRICS["mae"].higher_is_better
    assert METRICS["accuracy"].higher_is_better


def test_metric_errors_say_what_to_fix() -> None:
    with pytest.raises(ValueError, match="accuracy"):
        metric_named("vibes")
    with pytest.raises(ValueError, match="no labeled rows"):
        METRICS["accuracy"].score([], [])
    with pytest.raises(ValueError, match="numeric labels"):
        METRICS["mae"].score(["cat"], ["1"])


def _prediction(request_id: str, at: float, width: int = 2) -> LoggedPrediction:
    return LoggedPrediction(request_id, np.full(width, at), at)


def test_join_keeps_labeled_rows_oldest_first_and_drops_other_widths() -> None:
    predictions = [
        _prediction("c", 3.0),
        _prediction("a", 1.0),
        _prediction("b", 2.0),
        _prediction("unlabeled", 4.0),
        _prediction("wide", 5.0, width=3),
    ]
    labels = {"a": "0", "b": "1", "c": "1", "wide": "0"}
    table, dropped = datasets.join_labels(predictions, labels, ["x", "y"])
    assert table.labels == ["0", "1", "1"]
    assert table.features[:, 0].tolist() == [1.0, 2.0, 3.0]
    assert dropped == 1
    newest, _ = datasets.join_labels(predictions, labels, ["x", "y"], max_rows=2)
    assert newest.features[:, 0].tolist() == [2.0, 3.0]

    training, holdout = datasets.hold_out(table, 2)
    assert training.labels == ["0"]
    assert holdout.features[:, 0].tolist() == [2.0, 3.0]


def test_a_dataset_has_one_sha256_and_reads_back(tmp_path: object) -> None:
    table = datasets.Table(["a", "b"], np.array([[0.1, 2.0], [3.5, -1e-9]]), ["1", "0"])
    first_path, first_sha = datasets.write_dataset(tmp_path / "one", table)  # type: ignore[operator]
    second_path, second_sha = datasets.write_dataset(tmp_path / "two", table)  # type: ignore[operator]
    assert first_sha == second_sha == hashlib.sha256(first_path.read_bytes()).hexdigest()
    back = datasets.from_csv(second_path.read_bytes())
    assert back.feature_names == ["a", "b"]
    assert back.labels == ["1", "0"]
    np.testing.assert_array_equal(back.features, table.features)
    with pytest.raises(ValueError, match="label"):
        datasets.from_csv(b"a,b\n1,2\n")
    with pytest.raises(ValueError, match="different inputs"):
        datasets.concatenate(table, datasets.Table.empty(["only"]))
