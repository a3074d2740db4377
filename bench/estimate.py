"""Benchmark: how close the drift detector's accuracy estimate (CBPE) comes to the accuracy
the labels later show, per window, before any of those labels arrive.

    make bench-estimate
    uv run python bench/estimate.py --windows 10 --window 500

scikit-learn's digits (8x8 images, 10 classes): each model is trained on half, its version's
reference period (the first 1,000 labelled predictions, what the detector calibrates on) is
drawn from a quarter, and production windows are drawn from the last quarter with input
noise growing window by window (a sensor going bad: covariate shift, so accuracy falls).
Per window it prints the realized accuracy, the detector's estimate, and the estimate of
the reference it is compared against: the reference period's accuracy carried forward,
which is all a monitor knows before labels arrive. A last scenario changes the concept
(labels permuted for some classes) without moving the inputs: no confidence-based estimate
can see that, and the table shows it, as the reason concept drift on labels stays.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split

from flywheel_drift.performance import REFERENCE_LABELS, Calibration, ConfidenceHistogram

Classifier = LogisticRegression | RandomForestClassifier


@dataclass(frozen=True)
class Window:
    realized: float
    estimated: float
    carried: float


def calibrated_on_reference(
    model: Classifier, features: np.ndarray, labels: np.ndarray, rng: np.random.Generator
) -> tuple[Calibration, float]:
    """The detector's calibration from the reference period, and that period's accuracy."""
    rows = rng.integers(0, len(features), REFERENCE_LABELS)
    probabilities = model.predict_proba(features[rows])
    predicted = model.classes_[probabilities.argmax(axis=1)]
    calibration = Calibration()
    for confidence, right in zip(
        probabilities.max(axis=1).tolist(), (predicted == labels[rows]).tolist(), strict=True
    ):
        calibration.learn(confidence, right)
    return calibration, float((predicted == labels[rows]).mean())


def window_of(
    model: Classifier,
    calibration: Calibration,
    carried: float,
    features: np.ndarray,
    labels: np.ndarray,
) -> Window:
    probabilities = model.predict_proba(features)
    histogram = ConfidenceHistogram()
    histogram.add(probabilities.max(axis=1))
    estimate = calibration.estimate(histogram)
    assert estimate is not None
    realized = float((model.classes_[probabilities.argmax(axis=1)] == labels).mean())
    return Window(realized, estimate.accuracy, carried)


Shift = Callable[[np.random.Generator, np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def noisier(
    rng: np.random.Generator, features: np.ndarray, labels: np.ndarray, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel noise of standard deviation 1.5 x the window's number (pixels are 0-16)."""
    return np.clip(features + rng.normal(0, 1.5 * step, features.shape), 0, 16), labels


def relabelled(
    rng: np.random.Generator, features: np.ndarray, labels: np.ndarray, step: int
) -> tuple[np.ndarray, np.ndarray]:
    """From window 3 on, what was a 1 is now called a 7 and the reverse: the inputs stay."""
    if step < 3:
        return features, labels
    swapped = labels.copy()
    swapped[labels == 1], swapped[labels == 7] = 7, 1
    return features, swapped


def run(model: Classifier, shift: Shift, windows: int, size: int, seed: int) -> list[Window]:
    rng = np.random.default_rng(seed)
    digits = load_digits()
    train_x, rest_x, train_y, rest_y = train_test_split(
        digits.data, digits.target, train_size=0.5, random_state=seed, stratify=digits.target
    )
    ref_x, prod_x, ref_y, prod_y = train_test_split(
        rest_x, rest_y, train_size=0.5, random_state=seed, stratify=rest_y
    )
    model.fit(train_x, train_y)
    calibration, carried = calibrated_on_reference(model, ref_x, ref_y, rng)
    results = []
    for step in range(windows):
        rows = rng.integers(0, len(prod_x), size)
        features, labels = shift(rng, prod_x[rows], prod_y[rows], step)
        results.append(window_of(model, calibration, carried, features, labels))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=10)
    parser.add_argument("--window", type=int, default=500, help="predictions per window")
    parser.add_argument("--seed", type=int, default=5)
    args = parser.parse_args()
    models: dict[str, Callable[[], Classifier]] = {
        "logistic regression": lambda: LogisticRegression(max_iter=2000),
        "random forest": lambda: RandomForestClassifier(n_estimators=100, random_state=0),
    }
    shifts: dict[str, Shift] = {"input noise": noisier, "labels swapped": relabelled}
    print(f"digits, windows of {args.window} predictions, calibrated on {REFERENCE_LABELS} labels")
    for model_name, make in models.items():
        for shift_name, shift in shifts.items():
            results = run(make(), shift, args.windows, args.window, args.seed)
            print(f"\n{model_name}, {shift_name}")
            print(f"{'window':>6} {'realized':>9} {'CBPE':>7} {'carried':>8}")
            for index, window in enumerate(results):
                print(
                    f"{index:>6} {window.realized:>9.3f} {window.estimated:>7.3f} "
                    f"{window.carried:>8.3f}"
                )
            cbpe = np.mean([abs(w.estimated - w.realized) for w in results])
            carried = np.mean([abs(w.carried - w.realized) for w in results])
            print(
                f"mean absolute error of the estimate: CBPE {cbpe:.3f}, reference carried "
                f"forward {carried:.3f} ({carried / cbpe:.1f}x CBPE's)"
            )


if __name__ == "__main__":
    main()
