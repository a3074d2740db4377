"""The fuzz suite's fleet, its budget of inputs, and the tally it prints at the end."""

from __future__ import annotations

import json
import math
import os
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from hypothesis import HealthCheck, settings

from flywheel_testing.models import IrisModels

from .calls import every_rpc
from .fleet import FuzzFleet, fuzz_fleet

INPUTS_ENV = "FLYWHEEL_FUZZ_INPUTS"
"""Inputs per service for a long run (`make fuzz` sets it to 10000); unset in `make test`."""
REPORT_ENV = "FLYWHEEL_FUZZ_REPORT"
"""A file to write the tally to, as JSON."""
BOUNDED_EXAMPLES = 6
"""Examples per test and strategy in `make test`: every method is reached, quickly."""
FUZZ_TESTS_PER_RPC = 2  # raw bytes and well-formed messages

TALLY: dict[str, Counter[str]] = defaultdict(Counter)
"""Answers by status code, per service, of every fuzz input sent."""


SAMPLES: dict[tuple[str, str], set[str]] = defaultdict(set)
"""A few answers' details by service and status, to read what the services said."""
SAMPLED_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.FAILED_PRECONDITION})


def record(server: str, code: grpc.StatusCode, details: str = "") -> None:
    TALLY[server][code.name] += 1
    samples = SAMPLES[server, code.name]
    if code in SAMPLED_CODES and len(samples) < 5:
        samples.add(details[:200])


def long_run() -> bool:
    return bool(os.environ.get(INPUTS_ENV))


def examples_for(server: str) -> int:
    """Examples per fuzz test of `server`'s methods: its budget shared by its tests, with a
    margin for methods whose requests have few distinct values (hypothesis stops those
    early)."""
    budget = int(os.environ.get(INPUTS_ENV) or 0)
    if not budget:
        return BOUNDED_EXAMPLES
    tests = FUZZ_TESTS_PER_RPC * sum(rpc.server == server for rpc in every_rpc())
    return math.ceil(1.5 * budget / tests)


def fuzz_settings(server: str) -> settings:
    return settings(
        max_examples=examples_for(server),
        deadline=None,
        derandomize=not long_run(),  # `make test` sends the same inputs every run
        database=None,
        suppress_health_check=list(HealthCheck),
    )


@pytest.fixture(scope="session")
def fleet(
    kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory, iris_models: IrisModels
) -> Iterator[FuzzFleet]:
    with fuzz_fleet(kafka_bootstrap, tmp_path_factory.mktemp("fuzz"), iris_models) as started:
        yield started


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not TALLY:
        return
    codes = sorted({code for counts in TALLY.values() for code in counts})
    terminalreporter.section("fuzz inputs by status code")
    header = f"{'service':<10}{'inputs':>8}" + "".join(f"{code:>20}" for code in codes)
    terminalreporter.write_line(header)
    for server in sorted(TALLY):
        counts = TALLY[server]
        row = f"{server:<10}{sum(counts.values()):>8}"
        terminalreporter.write_line(row + "".join(f"{counts[code]:>20}" for code in codes))
    for (server, code), details in sorted(SAMPLES.items()):
        for detail in sorted(details):
            terminalreporter.write_line(f"{server} {code}: {detail}")
    report = os.environ.get(REPORT_ENV)
    if report:
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_text(json.dumps({s: dict(c) for s, c in TALLY.items()}, indent=2))
