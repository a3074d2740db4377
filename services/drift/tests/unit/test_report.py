"""The drift report page: what a person reading it about a drifted window sees."""

from html.parser import HTMLParser

import numpy as np
import pytest

from flywheel_drift.detection import (
    MULTIVARIATE,
    Monitor,
    Severity,
    alerting,
    data_drift_and_counts,
    quality,
)
from flywheel_drift.domain import LatencyQuantiles, MetricsWindow, WindowRef, window_alert
from flywheel_drift.performance import Estimate
from flywheel_drift.profiles import build_profile
from flywheel_drift.report import ReportInput, render

FEATURES = ["age", "income", "score", "segment"]


class _Marked(HTMLParser):
    """The `data-feature` of every element whose class says `drifted`, by tag."""

    def __init__(self) -> None:
        super().__init__()
        self.drifted: dict[str, set[str]] = {}
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = dict(attrs)
        if "drifted" in (found.get("class") or "").split() and found.get("data-feature"):
            self.drifted.setdefault(tag, set()).add(str(found["data-feature"]))


def _metrics(index: int, accuracy: float | None) -> MetricsWindow:
    ref = WindowRef(f"m:1:{index}", False, index, 1_800_000_000.0 + index, 1_800_000_001.0 + index)
    return MetricsWindow("m", 1, ref, 500, 3, LatencyQuantiles(1, 2, 3, 1, 4), {"0": 250},
                         0, 100 if accuracy is not None else 0, accuracy, ref.end,
                         estimate=Estimate(0.9 - index / 20, 500, 100))  # fmt: skip


@pytest.fixture(scope="module")
def page() -> str:
    rng = np.random.default_rng(7)
    sample = np.column_stack(
        [rng.normal(size=(3000, 3)), rng.integers(0, 3, size=3000).astype(float)]
    )
    profile = build_profile("m", 1, sample, FEATURES, categorical={"segment"})
    window = np.column_stack(
        [rng.normal(size=(500, 3)), rng.integers(0, 3, size=500).astype(float)]
    )
    window[:, 1] += 1.0  # income moved by one standard deviation
    monitor = Monitor()
    tested = data_drift_and_counts(profile, window, monitor)
    findings = quality(profile, window, "FP32", monitor) + tested.findings
    metrics = [_metrics(i, 0.95 if i < 3 else 0.7) for i in range(5)]
    ref = metrics[-1].window
    alert = window_alert(ref, "m", 1, findings, alerting(findings, monitor), monitor, ref.end)
    return render(
        ReportInput(
            model="m",
            version=1,
            window=ref,
            findings=findings,
            histograms=tested.counts,
            profile=profile,
            metrics=metrics,
            alert=alert,
            generated_at=ref.end,
        )
    )


def test_the_drifted_feature_is_highlighted_in_the_tests_and_its_distribution(page: str) -> None:
    marked = _Marked()
    marked.feed(page)
    assert marked.drifted["tr"] == {"income", MULTIVARIATE}  # the joint test sees it too
    assert marked.drifted["div"] == {"income"}
    assert "1 of 4 features drifted; the features&#x27; joint distribution moved" in page
    assert "all features together" in page


def test_every_feature_has_its_reference_and_window_distribution_as_inline_svg(
    page: str,
) -> None:
    marked = _Marked()
    marked.feed(page)
    assert marked.tags.count("svg") == len(FEATURES) + 1  # and the metrics over time
    for name in FEATURES:
        assert f'data-feature="{name}"' in page
    assert "unseen" in page  # the categorical feature's chart has its categories
    external = ("<script", "<link", "<img", 'href="http', 'src="http')
    assert [marker for marker in external if marker in page] == []


def test_corrected_p_values_and_quality_rates_are_shown(page: str) -> None:
    shown = ["corrected p-value", "kolmogorov smirnov", "chi square", "Data quality",
             "nan rate", "out of range rate", "Metrics over time", "accuracy",
             "estimated accuracy (before labels)", "<td>0.700</td>"]  # fmt: skip
    assert [text for text in shown if text not in page] == []


def test_a_page_without_reference_or_windows_says_so() -> None:
    page = render(ReportInput(model="m", version=2, window=None, findings=()))
    assert "no window has closed yet" in page
    assert "reference profile is not loaded" in page
    assert Severity.HIGH.name.lower() not in page
