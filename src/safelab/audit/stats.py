"""Interval estimates for judge scores across seeds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from inspect_ai.scorer import Metric, SampleScore, Value, metric

from safelab.interp.metrics import mean_ci


@dataclass(frozen=True)
class MeanInterval:
    """A mean with a percentile-bootstrap confidence interval."""

    mean: float
    low: float
    high: float
    n: int
    confidence: float
    seed: int


def bootstrap_mean_ci(
    values: Sequence[float], n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> MeanInterval:
    """Mean of ``values`` with a seeded percentile-bootstrap interval (NaN when empty)."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if x.size == 0:
        return MeanInterval(math.nan, math.nan, math.nan, 0, confidence, seed)
    mean, low, high = mean_ci(x, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return MeanInterval(mean, low, high, int(x.size), confidence, seed)


@metric
def bootstrap_ci(n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0) -> Metric:
    """Percentile-bootstrap interval of the mean across samples (seeded)."""

    def compute(scores: list[SampleScore]) -> Value:
        ci = bootstrap_mean_ci([s.score.as_float() for s in scores], n_resamples, confidence, seed)
        return {"low": ci.low, "high": ci.high}

    return compute
