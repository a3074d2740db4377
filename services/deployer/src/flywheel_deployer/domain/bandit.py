"""Bandit routing: the arms' traffic follows the probability that each has the best reward.

Thompson sampling over the metric windows each arm's version produced since the rollout
began. Accuracy is a Bernoulli reward: an arm's accuracy has the posterior
Beta(1 + correct, 1 + wrong) over its labelled predictions. Latency is the windows' p99: an
arm's mean p99 has a normal posterior around its windows' mean, as wide as their spread
over the square root of their number (an arm without windows samples from what every arm
showed, twice as wide, so it is explored). Many joint draws give each arm's probability of
being best; every arm keeps `floor` percent and shares the rest in proportion. Before any
reward is observed, and for moves under two points, the weights stay as they are.

Pure arithmetic on window summaries, seeded by the caller, so that a decision can be
replayed from stored windows and is the same on every replica.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from flywheel_deployer.analysis import Window

DRAWS = 4000
DEFAULT_FLOOR_PERCENT = 5
DEFAULT_REBALANCE_SECONDS = 60.0
MIN_MOVE_PERCENT = 2
"""Weights change only when an arm's would move by this much: the draws' own noise (about
one point at an even split) does not churn the routing."""


class Reward(StrEnum):
    ACCURACY = "accuracy"
    LATENCY = "latency"


@dataclass(frozen=True)
class BanditTerms:
    """How a bandit's traffic follows its reward."""

    reward: Reward = Reward.ACCURACY
    floor_percent: int = DEFAULT_FLOOR_PERCENT
    rebalance_seconds: float = DEFAULT_REBALANCE_SECONDS


@dataclass(frozen=True)
class Evidence:
    """What one arm's windows say about its reward."""

    labeled: int = 0
    correct: float = 0.0
    latencies_ms: tuple[float, ...] = ()

    @classmethod
    def of(cls, windows: Sequence[Window]) -> Evidence:
        labeled = sum(w.labeled for w in windows if w.accuracy is not None)
        correct = sum(w.accuracy * w.labeled for w in windows if w.accuracy is not None)
        latencies = tuple(w.latency_p99_ms for w in windows if w.requests)
        return cls(labeled, correct, latencies)


def best_arm_probabilities(
    evidence: Sequence[Evidence], reward: Reward, rng: np.random.Generator
) -> np.ndarray:
    """Each arm's probability of having the best reward, from `DRAWS` joint samples."""
    if reward is Reward.ACCURACY:
        correct = np.array([e.correct for e in evidence])
        wrong = np.array([e.labeled for e in evidence]) - correct
        samples = rng.beta(1.0 + correct, 1.0 + wrong, size=(DRAWS, len(evidence)))
    else:
        samples = -_latency_samples(evidence, rng)  # the lower the latency, the better
    best = np.argmax(samples, axis=1)
    return np.bincount(best, minlength=len(evidence)) / DRAWS


def _latency_samples(evidence: Sequence[Evidence], rng: np.random.Generator) -> np.ndarray:
    pooled = [latency for e in evidence for latency in e.latencies_ms]
    pooled_mean = float(np.mean(pooled)) if pooled else 0.0
    pooled_spread = float(np.std(pooled)) if len(pooled) > 1 else max(pooled_mean, 1.0)
    means, scales = [], []
    for arm in evidence:
        if not arm.latencies_ms:
            means.append(pooled_mean)
            scales.append(2 * max(pooled_spread, 1e-3))
            continue
        spread = float(np.std(arm.latencies_ms)) if len(arm.latencies_ms) > 1 else pooled_spread
        means.append(float(np.mean(arm.latencies_ms)))
        scales.append(max(spread, 1e-3) / math.sqrt(len(arm.latencies_ms)))
    return rng.normal(means, scales, size=(DRAWS, len(evidence)))


def weights(probabilities: Sequence[float], floor_percent: int) -> tuple[int, ...]:
    """Whole percentages summing to 100: `floor_percent` each, the rest in proportion to
    `probabilities` (largest remainders round up)."""
    arms = len(probabilities)
    rest = 100 - floor_percent * arms
    shares = [rest * p for p in probabilities]
    whole = [math.floor(share) for share in shares]
    by_remainder = sorted(range(arms), key=lambda i: shares[i] - whole[i], reverse=True)
    for index in by_remainder[: rest - sum(whole)]:
        whole[index] += 1
    return tuple(floor_percent + share for share in whole)


def even_weights(arms: int) -> tuple[int, ...]:
    """100 split as evenly as whole percentages allow, the first arms taking the rest."""
    base, extra = divmod(100, arms)
    return tuple(base + (1 if index < extra else 0) for index in range(arms))
