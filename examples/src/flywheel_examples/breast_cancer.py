"""A breast-cancer classifier, from first training to every retrain, with one entrypoint.

    python -m flywheel_examples.breast_cancer --model breast-cancer --promote

trains on scikit-learn's bundled breast-cancer data (nothing is downloaded), exports the
model to ONNX and registers it with its reference sample and lineage; `--promote` makes it
`production`. Its training data is kept as a CSV file whose URI and sha256 go into the
lineage, so a retrain can add it to the logged data.

Started by the retrain trigger (its `FLYWHEEL_TRAINING_*` variables are set), the same
command trains on the run's dataset instead and registers a `candidate` whose lineage names
the run, its trigger and the dataset's sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from flywheel_cli.connection import Addresses
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from flywheel_common.telemetry import continued_trace
from flywheel_common.training import TrainingResult, TrainingRun
from flywheel_sdk import Lineage, Registry, register

ENTRYPOINT = "python -m flywheel_examples.breast_cancer"
MODEL = "breast-cancer"
"""The name it registers under unless told otherwise (README's "loop by hand" uses it)."""
ESTIMATORS = ("logistic", "stump")
"""`stump` (a one-split tree) is a deliberately weak baseline: a gate should reject it."""
REFERENCE_ROWS = 1000


@dataclass(frozen=True)
class Dataset:
    feature_names: list[str]
    features: np.ndarray
    labels: np.ndarray


def bundled_data() -> Dataset:
    data = load_breast_cancer()
    names = [name.replace(" ", "_") for name in data.feature_names]
    return Dataset(names, data.data.astype(np.float64), data.target.astype(np.int64))


def write_csv(dataset: Dataset, path: Path) -> str:
    """The dataset as the CSV layout retrain datasets use; returns its sha256."""
    lines = [",".join([*dataset.feature_names, "label"])]
    for row, label in zip(dataset.features, dataset.labels, strict=True):
        lines.append(",".join([*(repr(float(v)) for v in row), str(int(label))]))
    data = ("\n".join(lines) + "\n").encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def read_csv(path: Path) -> Dataset:
    header, *rows = [line.split(",") for line in path.read_text().splitlines() if line]
    values = np.array([[float(v) for v in row] for row in rows], dtype=np.float64)
    return Dataset(header[:-1], values[:, :-1], values[:, -1].astype(np.int64))


def estimator(kind: str) -> Any:
    if kind == "stump":
        return DecisionTreeClassifier(max_depth=1, random_state=0)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))


def train(dataset: Dataset, kind: str) -> tuple[Any, dict[str, float]]:
    """The model fitted on every row, and its accuracy on a 20% split it was not fitted on."""
    fit_x, test_x, fit_y, test_y = train_test_split(
        dataset.features,
        dataset.labels,
        test_size=0.2,
        random_state=0,
        stratify=dataset.labels if np.bincount(dataset.labels).min() > 1 else None,
    )
    model = estimator(kind).fit(fit_x.astype(np.float32), fit_y)
    accuracy = float(model.score(test_x.astype(np.float32), test_y))
    final = estimator(kind).fit(dataset.features.astype(np.float32), dataset.labels)
    return final, {"accuracy": accuracy}


def code_version() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def register_model(
    name: str,
    dataset: Dataset,
    model: Any,
    metrics: dict[str, float],
    lineage: Lineage,
    aliases: list[str],
    kind: str,
    registry: Registry,
    idempotency_key: str = "",
) -> int:
    """Register through the SDK: converted to ONNX, checked against the fitted model on the
    reference sample the drift detector will use, streamed with its lineage."""
    registered = register(
        model,
        name,
        reference=dataset.features[:REFERENCE_ROWS],
        feature_names=dataset.feature_names,
        description=f"{kind} classifier of breast-cancer biopsies",
        params={"estimator": kind, "rows": str(len(dataset.labels))},
        metrics=metrics,
        lineage=lineage,
        aliases=aliases,
        idempotency_key=idempotency_key,
        registry=registry,
    )
    return registered.version


def first_training(args: argparse.Namespace) -> int:
    dataset = bundled_data()
    path = (args.data_dir / f"{args.model}-training.csv").resolve()
    sha = write_csv(dataset, path)
    model, metrics = train(dataset, args.estimator)
    lineage = Lineage(
        dataset_uri=path.as_uri(),
        dataset_sha256=sha,
        code_version=code_version(),
        triggered_by="manual:examples",
        training_entrypoint=ENTRYPOINT,
    )
    aliases = ["production"] if args.promote else []
    registry = Registry(args.registry, args.tls, args.token)
    version = register_model(
        args.model, dataset, model, metrics, lineage, aliases, args.estimator, registry
    )
    print(f"registered {args.model} version {version}: accuracy {metrics['accuracy']:.3f}")
    return version


def retrain(run: TrainingRun, kind: str) -> int:
    dataset = read_csv(Path(run.dataset_path))
    print(f"run {run.run_id}: training {kind} on {len(dataset.labels)} rows of {run.dataset_uri}")
    model, metrics = train(dataset, kind)
    lineage = run.lineage(code_version(), ENTRYPOINT)
    registry = Registry(run.registry_address, run.registry_tls(), run.registry_token)
    with continued_trace(run.traceparent):  # the registration joins the run's trace
        version = register_model(
            run.model, dataset, model, metrics, lineage, [run.alias], kind, registry,
            run.idempotency_key,
        )  # fmt: skip
    TrainingResult(run.model, version).write(Path(run.output_dir))
    print(f"registered {run.model} version {version}: accuracy {metrics['accuracy']:.3f}")
    return version


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=MODEL)
    addresses = Addresses()
    parser.add_argument(
        "--registry", default=addresses.registry, help="default: FLYWHEEL_CLI_REGISTRY"
    )
    parser.add_argument(
        "--token", default=addresses.token, help="bearer token with the writer role"
    )
    parser.add_argument("--data-dir", type=Path, default=Path(".run/data/examples"))
    parser.add_argument("--estimator", choices=ESTIMATORS, default="logistic")
    parser.add_argument("--promote", action="store_true", help="make it production")
    parser.set_defaults(tls=addresses.tls)  # FLYWHEEL_CLI_TLS__* or .run/cli.env
    args = parser.parse_args(argv)
    run = TrainingRun.from_environment()
    if run is None:
        first_training(args)
    else:
        retrain(run, args.estimator)


if __name__ == "__main__":
    main()
