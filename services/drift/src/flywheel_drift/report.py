"""The drift report: one self-contained HTML page of a model version's window, for people.

Pure: the detector's values in (reference profile, the window's findings and feature
counts, the recent metric windows), an HTML string out; the HTTP route and the CLI only
fetch and deliver it. Charts are matplotlib SVG inlined in the page, with their text kept as
text: no script, no network, and it opens the same in a browser, a ticket or a mail.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from html import escape
from itertools import pairwise
from typing import TYPE_CHECKING

from flywheel_drift.detection import MULTIVARIATE, DriftTest, Finding, Kind
from flywheel_drift.domain import Alert, MetricsWindow, WindowRef
from flywheel_drift.profiles import FeatureCounts, FeatureProfile, ReferenceProfile

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REFERENCE_COLOR, WINDOW_COLOR, DRIFT_COLOR = "#7f8c9a", "#1f77b4", "#d62728"


@dataclass(frozen=True)
class ReportInput:
    """What the page shows of one window of one model version."""

    model: str
    version: int
    window: WindowRef | None
    """The window reported; None before the version's first window closed."""
    findings: Sequence[Finding]
    """Every test result of the window (or, of an older window, those its alert reported)."""
    histograms: Sequence[FeatureCounts] = ()
    """The window's features in their reference bins; empty when not kept."""
    profile: ReferenceProfile | None = None
    metrics: Sequence[MetricsWindow] = ()
    """Recent metric windows, oldest first."""
    alert: Alert | None = None
    """The alert the window raised, if any."""
    generated_at: float = 0.0
    notes: Sequence[str] = field(default_factory=tuple)
    """What the page cannot show, and why."""


def render(report: ReportInput) -> str:
    """The HTML page of `report`."""
    drifted = _drifted_features(report.findings)
    parts = [
        _header(report, drifted),
        _tests_section(report.findings),
        _distributions_section(report, drifted),
        _quality_section(report.findings),
        _over_time_section(report.metrics, report.window),
    ]
    title = f"Drift report: {report.model} v{report.version}"
    return _PAGE.format(title=escape(title), style=_STYLE, body="\n".join(parts))


def _shown(feature: str) -> str:
    """A feature's name as the page shows it."""
    return "all features together" if feature == MULTIVARIATE else feature


def _drifted_features(findings: Iterable[Finding]) -> dict[str, list[Finding]]:
    drifted: dict[str, list[Finding]] = {}
    for finding in findings:
        if finding.drifted and finding.feature_index >= 0:
            drifted.setdefault(finding.feature, []).append(finding)
    return drifted


def _header(report: ReportInput, drifted: dict[str, list[Finding]]) -> str:
    window = report.window
    if window is None:
        where = "no window has closed yet"
    else:
        where = f"window {window.index} ({_time(window.start)} to {_time(window.end)})"
    tested = {f.feature for f in report.findings if f.kind is Kind.DATA and f.feature_index >= 0}
    verdict = f"{len(drifted)} of {len(tested)} features drifted" if tested else "no feature tested"
    if any(f.drifted for f in report.findings if f.feature == MULTIVARIATE):
        verdict += "; the features' joint distribution moved"
    lines = [
        f"<h1>Drift report: {escape(report.model)} v{report.version}</h1>",
        f'<p class="where">{escape(where)}; generated {_time(report.generated_at)}</p>',
        f'<p class="verdict {"drifted" if drifted else "clean"}">{escape(verdict)}</p>',
    ]
    if report.alert is not None:
        alert = report.alert
        lines.append(
            f'<p class="alert">Alert <code>{escape(alert.alert_id)}</code> '
            f"({escape(alert.severity.name.lower())}): {escape(alert.summary)}</p>"
        )
    lines += [f'<p class="note">{escape(note)}</p>' for note in report.notes]
    return "<header>" + "\n".join(lines) + "</header>"


_DISTANCES = (
    DriftTest.POPULATION_STABILITY_INDEX,
    DriftTest.WASSERSTEIN,
    DriftTest.JENSEN_SHANNON,
)
_RATES = (DriftTest.NAN_RATE, DriftTest.INF_RATE, DriftTest.OUT_OF_RANGE_RATE)


def _by_feature(findings: Iterable[Finding]) -> dict[str, dict[DriftTest, Finding]]:
    grouped: dict[str, dict[DriftTest, Finding]] = {}
    for finding in findings:
        grouped.setdefault(finding.feature, {})[finding.test] = finding
    return grouped


def _tests_section(findings: Sequence[Finding]) -> str:
    """One row per feature (and the prediction): its test with a p-value, then distances."""
    grouped = _by_feature(f for f in findings if f.kind in (Kind.DATA, Kind.PREDICTION))
    if not grouped:
        return "<section><h2>Test results</h2><p>No test ran on this window.</p></section>"

    def order(tests: dict[DriftTest, Finding]) -> tuple[bool, float]:
        adjusted = [f.adjusted_p_value for f in tests.values() if f.adjusted_p_value is not None]
        return not any(f.drifted for f in tests.values()), min(adjusted, default=2.0)

    rows = []
    for feature, tests in sorted(grouped.items(), key=lambda item: order(item[1])):
        drifted = any(f.drifted for f in tests.values())
        tested = next((f for f in tests.values() if f.p_value is not None), None)
        cells = (
            f"<td>{escape(_test_name(tested))}</td><td>{tested.statistic:.4g}</td>"
            f'<td>{_p(tested.p_value)}</td><td class="adjusted-p">'
            f"{_p(tested.adjusted_p_value)}</td><td>{tested.threshold:g}</td>"
            if tested is not None
            else "<td></td>" * 5
        )
        for test in _DISTANCES:
            found = tests.get(test)
            if found is None:
                cells += "<td></td>"
            else:
                mark = ' class="over"' if found.drifted else ""
                cells += f"<td{mark}>{found.statistic:.3g}</td>"
        rows.append(
            f'<tr class="{"drifted" if drifted else "ok"}" data-feature="{escape(feature)}">'
            f"<td>{escape(_shown(feature))}</td>{cells}"
            f"<td>{'DRIFTED' if drifted else 'ok'}</td></tr>"
        )
    return (
        "<section><h2>Test results</h2>"
        "<p>p-values corrected for testing every feature of the window at once: a feature "
        "drifted when its corrected p-value is below alpha, or a distance is above the limit "
        "its monitor sets (distances without a limit are shown, never alerted on).</p>"
        '<table class="tests"><thead><tr><th>feature</th><th>test</th><th>statistic</th>'
        "<th>p-value</th>"
        "<th>corrected p-value</th><th>alpha</th><th>PSI</th><th>Wasserstein</th>"
        "<th>Jensen-Shannon</th><th>result</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></section>"
    )


def _quality_section(findings: Sequence[Finding]) -> str:
    """One row per feature: its NaN, Inf and out-of-range rates against their limits."""
    grouped = _by_feature(f for f in findings if f.kind is Kind.QUALITY)
    if not grouped:
        return ""
    limits = {f.test: f.threshold for f in findings if f.test in _RATES}
    rows = []
    for feature, rates in sorted(grouped.items(), key=lambda i: not any(
        f.drifted for f in i[1].values()
    )):  # fmt: skip
        flagged = any(f.drifted for f in rates.values())
        cells = ""
        for test in _RATES:
            found = rates.get(test)
            if found is None:
                cells += "<td></td>"
            elif found.drifted:
                cells += f'<td class="over">{found.statistic:.2%} (p {_p(found.p_value)})</td>'
            else:
                cells += f"<td>{found.statistic:.2%}</td>"
        rows.append(
            f'<tr class="{"drifted" if flagged else "ok"}" data-feature="{escape(feature)}">'
            f"<td>{escape(feature)}</td>{cells}<td>{'FLAGGED' if flagged else 'ok'}</td></tr>"
        )
    headers = "".join(
        f"<th>{escape(_test_name_of(test))} (limit {limits[test]:.2%})</th>"
        if test in limits
        else f"<th>{escape(_test_name_of(test))}</th>"
        for test in _RATES
    )
    return (
        "<section><h2>Data quality</h2>"
        "<p>Rates of the window, flagged past their limit or when significantly higher "
        "than the reference's own rate (with the p-value of that test).</p>"
        f"<table><thead><tr><th>feature</th>{headers}<th>result</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table></section>"
    )


def _distributions_section(report: ReportInput, drifted: dict[str, list[Finding]]) -> str:
    profile = report.profile
    if profile is None:
        return (
            "<section><h2>Distributions</h2>"
            "<p>The version's reference profile is not loaded.</p></section>"
        )
    counts = {h.feature: h.counts for h in report.histograms}
    cards = []
    # Drifted features first: they are what the reader came for.
    for feature in sorted(profile.features, key=lambda f: f.name not in drifted):
        found = drifted.get(feature.name, [])
        heading = escape(feature.name) + (
            f' <span class="badge">drifted: {escape(_test_name(found[0]))}, '
            f"corrected p = {_p(found[0].adjusted_p_value)}</span>"
            if found
            else ""
        )
        window_counts = counts.get(feature.name)
        chart = (
            _distribution_chart(feature, window_counts, bool(found))
            if window_counts is not None
            else "<p>The window's values of this feature are not kept.</p>"
        )
        cards.append(
            f'<div class="feature{" drifted" if found else ""}" '
            f'data-feature="{escape(feature.name)}"><h3>{heading}</h3>{chart}</div>'
        )
    return (
        "<section><h2>Distributions: reference vs window</h2>"
        "<p>Share of values per bin of the reference (its deciles, or its categories).</p>"
        f'<div class="features">{"".join(cards)}</div></section>'
    )


def _distribution_chart(feature: FeatureProfile, window: Sequence[int], drifted: bool) -> str:
    if feature.categorical:
        labels = [*feature.categories, "unseen"]
        reference = [*feature.categories.values(), 0]
    else:
        edges = [f"{edge:.3g}" for edge in feature.edges.tolist()]
        labels = [f"<{edges[0]}"] if edges else ["all"]
        labels += [f"{low}..{high}" for low, high in pairwise(edges)]
        labels += [f">={edges[-1]}"] if edges else []
        reference = [int(c) for c in feature.counts.tolist()]
    if len(window) != len(reference):
        return "<p>The window was counted in other bins than the reference's.</p>"
    ref_total, window_total = max(sum(reference), 1), max(sum(window), 1)
    from matplotlib.figure import Figure  # imported late: see _svg
    from matplotlib.ticker import MaxNLocator

    # Fixed margins, not tight_layout: laying out 30 charts' labels cost a third of a page.
    figure = Figure(figsize=(4.2, 2.4), layout=None)
    figure.subplots_adjust(left=0.14, right=0.98, top=0.96, bottom=0.34)
    axes = figure.add_subplot()
    axes.yaxis.set_major_locator(MaxNLocator(4))
    positions = range(len(labels))
    axes.bar([p - 0.2 for p in positions], [c / ref_total for c in reference], 0.4,
             color=REFERENCE_COLOR, label="reference")  # fmt: skip
    axes.bar([p + 0.2 for p in positions], [c / window_total for c in window], 0.4,
             color=DRIFT_COLOR if drifted else WINDOW_COLOR, label="window")  # fmt: skip
    axes.set_xticks(list(positions), labels, rotation=45, ha="right", fontsize=7)
    axes.set_ylabel("share", fontsize=8)
    axes.tick_params(axis="y", labelsize=7)
    axes.legend(fontsize=7, frameon=False)
    return _svg(figure)


def _over_time_section(metrics: Sequence[MetricsWindow], window: WindowRef | None) -> str:
    if not metrics:
        return ""
    indices = [m.window.index for m in metrics]
    from matplotlib.figure import Figure  # imported late: see _svg

    figure = Figure(figsize=(9, 4.4), layout="tight")
    volume, quality = figure.subplots(2, 1, sharex=True)
    volume.bar(indices, [m.request_count for m in metrics], color=WINDOW_COLOR, label="requests")
    volume.bar(indices, [m.error_count for m in metrics], color=DRIFT_COLOR, label="errors")
    volume.set_ylabel("predictions", fontsize=8)
    volume.legend(fontsize=7, frameon=False, loc="lower left")
    labeled = [(m.window.index, m.accuracy) for m in metrics if m.accuracy is not None]
    if labeled:
        quality.plot(*zip(*labeled, strict=True), marker="o", color="#2ca02c", label="accuracy")
    estimated = [(m.window.index, m.estimate.accuracy) for m in metrics if m.estimate]
    if estimated:
        quality.plot(*zip(*estimated, strict=True), marker="x", linestyle="--",
                     color="#9467bd", label="estimated accuracy (before labels)")  # fmt: skip
    quality.plot(indices, [m.nan_flagged_count / max(m.request_count, 1) for m in metrics],
                 marker=".", color="#ff7f0e", label="NaN-flagged share")  # fmt: skip
    quality.set_ylim(-0.02, 1.02)
    quality.set_xlabel("window", fontsize=8)
    quality.legend(fontsize=7, frameon=False, loc="lower left")
    for axes in (volume, quality):
        axes.tick_params(labelsize=7)
        if window is not None:
            axes.axvline(window.index, color="#444444", linestyle=":", linewidth=1)
    rows = "".join(
        f"<tr><td>{m.window.index}</td><td>{_time(m.window.end)}</td><td>{m.request_count}</td>"
        f"<td>{m.error_count}</td><td>{m.labeled_count}</td>"
        f"<td>{_number(m.accuracy)}</td>"
        f"<td>{_number(m.estimate.accuracy if m.estimate else None)}</td>"
        f"<td>{_number(m.mean_absolute_error)}</td><td>{m.latency.p99_ms:.1f}</td></tr>"
        for m in reversed(metrics[-10:])
    )
    return (
        "<section><h2>Metrics over time</h2>"
        f'<div class="chart">{_svg(figure)}</div>'
        "<table><thead><tr><th>window</th><th>closed</th><th>requests</th><th>errors</th>"
        "<th>labeled</th><th>accuracy</th><th>estimated accuracy</th><th>MAE</th>"
        "<th>p99 ms</th></tr></thead>"
        f"<tbody>{rows}</tbody></table></section>"
    )


_NO_METADATA: dict[str, str | None] = {"Date": None, "Creator": None, "Format": None, "Type": None}
_SVG_START = re.compile(r"^.*?(?=<svg)", re.DOTALL)


def _svg(figure: Figure) -> str:
    """The figure as inline SVG markup, its text as text (selectable, found by search)."""
    # matplotlib is imported by the first report, not at start-up: it was a sixth of the
    # service's import time, which every replica start and failover waits for.
    import matplotlib

    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "flywheel"}):
        figure.savefig(buffer, format="svg", metadata=_NO_METADATA, transparent=True)
    return _SVG_START.sub("", buffer.getvalue(), count=1)


def _test_name(finding: Finding) -> str:
    return _test_name_of(finding.test)


def _test_name_of(test: DriftTest) -> str:
    return test.value.replace("_", " ")


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.3f}"


def _p(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def _time(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem; color: #222; }
h1 { margin-bottom: 0.2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
.verdict { font-size: 1.2rem; font-weight: 600; }
.verdict.drifted, .badge { color: #b71c1c; } .verdict.clean { color: #1b5e20; }
.note { color: #8a6d3b; }
table { border-collapse: collapse; font-size: 0.85rem; }
th, td { border: 1px solid #ddd; padding: 0.2rem 0.5rem; text-align: right; }
th:first-child, td:first-child, .tests td:nth-child(2) { text-align: left; }
tr.drifted { background: #fdecea; font-weight: 600; } td.over { color: #b71c1c; }
.features { display: grid; grid-template-columns: repeat(auto-fill, minmax(420px, 1fr));
            gap: 0.8rem; }
.feature { border: 1px solid #ddd; border-radius: 6px; padding: 0.4rem; }
.feature.drifted { border: 2px solid #d62728; background: #fff6f5; }
.feature h3 { margin: 0.2rem 0; font-size: 0.95rem; } .badge { font-size: 0.8rem; }
svg { max-width: 100%; height: auto; }
"""

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>{style}</style></head>
<body>
{body}
</body></html>
"""
