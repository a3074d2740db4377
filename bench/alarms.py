"""Benchmark: false alarms and detection delay of the drift detector's alarm policies.

    make bench-alarms
    uv run python bench/alarms.py --clean-windows 1000 --runs 20

The detector's own tests (KS per feature with Benjamini-Hochberg at alpha 0.01, PSI,
Wasserstein, Jensen-Shannon, quality against the reference's rates) on windows of 1,000 x 30
features against a 5,000-row reference, all standard normal. Each alarm policy (k drifted of
the last n windows) is applied to the same sequence of per-window verdicts:
- false alarms per 1,000 clean windows;
- delay, in windows after the change, of the first alert on each scenario (the change starts
  at window 0): a 0.3 sigma mean shift in one feature, its variance x1.3, and a gradual
  shift of one feature reaching 0.5 sigma after 20 windows.
Printed beside the reference policy, an alert on every drifted window (1 of 1): what the
detector did before alarm policies.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

from flywheel_drift.detection import AlarmPolicy, Monitor, alerting, data_drift, quality
from flywheel_drift.profiles import ReferenceProfile, build_profile

FEATURES = 30
WINDOW = 1000
POLICIES = [AlarmPolicy(1, 1), AlarmPolicy(2, 3), AlarmPolicy(3, 5)]
MAX_WINDOWS = 40

Scenario = Callable[[np.random.Generator, int], np.ndarray]


def clean(rng: np.random.Generator, _: int) -> np.ndarray:
    return rng.normal(size=(WINDOW, FEATURES))


def mean_shift(rng: np.random.Generator, _: int) -> np.ndarray:
    window = clean(rng, 0)
    window[:, 0] += 0.3
    return window


def variance_change(rng: np.random.Generator, _: int) -> np.ndarray:
    window = clean(rng, 0)
    window[:, 0] *= 1.3
    return window


def gradual_shift(rng: np.random.Generator, index: int) -> np.ndarray:
    window = clean(rng, 0)
    window[:, 0] += 0.5 * min(index + 1, 20) / 20
    return window


SCENARIOS: dict[str, Scenario] = {
    "0.3 sigma mean shift": mean_shift,
    "variance x1.3": variance_change,
    "gradual to 0.5 sigma": gradual_shift,
}


def drifted(profile: ReferenceProfile, window: np.ndarray, monitor: Monitor) -> bool:
    """Whether the detector finds drift at alerting severity in the window."""
    findings = quality(profile, window, "FP32", monitor) + data_drift(profile, window, monitor)
    return bool(alerting(findings, monitor))


def alarms(verdicts: list[bool], policy: AlarmPolicy) -> int:
    """The windows at which the policy alerts."""
    return sum(policy.alarms(verdicts[: i + 1]) for i in range(len(verdicts)))


def first_alarm(verdicts: list[bool], policy: AlarmPolicy) -> int | None:
    for index in range(len(verdicts)):
        if policy.alarms(verdicts[: index + 1]):
            return index
    return None


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--clean-windows", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--seed", type=int, default=20261206)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    profile = build_profile("bench", 1, rng.normal(size=(5000, FEATURES)))
    monitor = Monitor()

    verdicts = [drifted(profile, clean(rng, i), monitor) for i in range(args.clean_windows)]
    print(f"\nalarm policies: windows of {WINDOW} x {FEATURES}, alpha 0.01, 5,000-row reference")
    print(f"drifted clean windows: {sum(verdicts)} of {len(verdicts)}")
    header = f"{'policy':<10}{'false alarms / 1,000 clean windows':>38}"
    delays: dict[str, dict[AlarmPolicy, list[int | None]]] = {}
    for name, scenario in SCENARIOS.items():
        delays[name] = {policy: [] for policy in POLICIES}
        for _ in range(args.runs):
            run = [drifted(profile, scenario(rng, i), monitor) for i in range(MAX_WINDOWS)]
            for policy in POLICIES:
                delays[name][policy].append(first_alarm(run, policy))
        header += f"  {name + ' (median delay)':>36}"
    print(header)
    reference = POLICIES[0]
    for policy in POLICIES:
        row = f"{policy.drifted_windows} of {policy.of_windows:<5}"
        row += f"{1000 * alarms(verdicts, policy) / len(verdicts):>38.1f}"
        for name in SCENARIOS:
            found = [d for d in delays[name][policy] if d is not None]
            missed = len(delays[name][policy]) - len(found)
            median = f"{np.median(found):.0f}" if found else "-"
            cell = f"{median} windows" + (f", {missed} missed" if missed else "")
            row += f"  {cell:>36}"
        print(row)
    base = alarms(verdicts, reference)
    for policy in POLICIES[1:]:
        ratio = alarms(verdicts, policy) / base if base else float("nan")
        name = f"{policy.drifted_windows} of {policy.of_windows}"
        print(f"{name}: {ratio:.2f}x the false alarms of 1 of 1")


if __name__ == "__main__":
    main()
