"""Training data from production: logged predictions joined with their ground truth.

The newest labeled rows are held out for the gate and never trained on; the rest, plus the
production version's own training data when the policy asks for it, form the dataset. A
dataset is a CSV file (one column per feature, then `label`) named by its sha256.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

LABEL_COLUMN = "label"


@dataclass(frozen=True)
class LoggedPrediction:
    request_id: str
    features: np.ndarray
    """One row of float64 features."""
    received_at: float
    """Epoch seconds."""


@dataclass(frozen=True)
class Table:
    feature_names: list[str]
    features: np.ndarray
    """float64 [rows, features]."""
    labels: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def empty(cls, feature_names: Sequence[str]) -> Table:
        return cls(list(feature_names), np.empty((0, len(feature_names))), [])


def join_labels(
    predictions: Iterable[LoggedPrediction],
    labels: Mapping[str, str],
    feature_names: Sequence[str] | None = None,
    max_rows: int = 0,
) -> tuple[Table, int]:
    """Rows whose request has a label, oldest first, as a table; also the number dropped
    for a feature count unlike the names (or, without names, unlike the most common one).
    With `max_rows`, only the newest rows are kept."""
    joined = sorted((p for p in predictions if p.request_id in labels), key=lambda p: p.received_at)
    if not joined:
        return Table.empty(feature_names or []), 0
    widths = [len(p.features) for p in joined]
    width = len(feature_names) if feature_names else max(set(widths), key=widths.count)
    kept = [p for p in joined if len(p.features) == width]
    if max_rows:
        kept = kept[-max_rows:]
    names = list(feature_names) if feature_names else [f"f{i}" for i in range(width)]
    table = Table(
        names,
        np.vstack([p.features for p in kept]) if kept else np.empty((0, width)),
        [labels[p.request_id] for p in kept],
    )
    return table, sum(1 for width_of in widths if width_of != width)


def hold_out(table: Table, holdout_size: int) -> tuple[Table, Table]:
    """(training, holdout): the newest `holdout_size` rows are the holdout."""
    cut = max(len(table) - holdout_size, 0)
    return (
        Table(table.feature_names, table.features[:cut], table.labels[:cut]),
        Table(table.feature_names, table.features[cut:], table.labels[cut:]),
    )


def concatenate(first: Table, second: Table) -> Table:
    if len(first.feature_names) != len(second.feature_names):
        raise ValueError(
            f"cannot combine {len(first.feature_names)} features with "
            f"{len(second.feature_names)}: the datasets describe different inputs"
        )
    return Table(
        first.feature_names,
        np.vstack([first.features, second.features]),
        first.labels + second.labels,
    )


def to_csv(table: Table) -> bytes:
    """The table as CSV bytes; the same table always gives the same bytes (and sha256)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*table.feature_names, LABEL_COLUMN])
    for row, label in zip(table.features, table.labels, strict=True):
        writer.writerow([*(repr(float(value)) for value in row), label])
    return buffer.getvalue().encode()


def from_csv(data: bytes) -> Table:
    """A table from CSV bytes written by `to_csv` (or any CSV whose last column is `label`)."""
    rows = list(csv.reader(io.StringIO(data.decode())))
    if not rows or rows[0][-1:] != [LABEL_COLUMN]:
        raise ValueError(f"a dataset's header must end with the {LABEL_COLUMN!r} column")
    names, body = rows[0][:-1], [row for row in rows[1:] if row]
    try:
        features = np.array([[float(v) for v in row[:-1]] for row in body], dtype=np.float64)
    except ValueError as error:
        raise ValueError(f"a dataset's feature values must be numbers: {error}") from error
    return Table(names, features.reshape(len(body), len(names)), [row[-1] for row in body])


def write_dataset(folder: Path, table: Table) -> tuple[Path, str]:
    """Store the table content-addressed; its path and sha256."""
    data = to_csv(table)
    digest = hashlib.sha256(data).hexdigest()
    path = folder / f"{digest}.csv"
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        partial.write_bytes(data)
        partial.replace(path)
    return path, digest
