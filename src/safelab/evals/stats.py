"""Estimates with uncertainty for behavioural evaluations.

Rates (the fraction of samples showing a behaviour) get a standard error and a Wilson 95%
interval, which stays honest at the small sample sizes a laptop run produces (0 of 4 is
reported as [0, 0.49], not [0, 0]). Statistics that are not a plain proportion (an accuracy
gap between paired conditions, a normalised faithfulness score) get a seeded percentile
bootstrap over the unit of resampling (the question), and record the seed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

Z95 = 1.959963984540054
DEFAULT_SEED = 0
DEFAULT_RESAMPLES = 2000


@dataclass(frozen=True)
class RateEstimate:
    """A proportion with its uncertainty; unscored samples are counted, never folded in.

    Attributes:
        k: samples showing the behaviour.
        n: scored samples.
        unscored: samples with no valid score (judge error, refusal, unparseable output).
        rate: k / n, or None when n is 0.
        stderr: binomial standard error sqrt(p(1-p)/n), or None when n is 0.
        ci_low: lower end of the Wilson 95% interval.
        ci_high: upper end of the Wilson 95% interval.
        method: how the interval was computed.
    """

    k: int
    n: int
    unscored: int
    rate: float | None
    stderr: float | None
    ci_low: float | None
    ci_high: float | None
    method: str = "wilson95"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class BootstrapEstimate:
    """A statistic with a seeded percentile-bootstrap 95% interval.

    Attributes:
        value: the statistic on the full sample, or None when undefined.
        stderr: standard deviation of the bootstrap distribution, or None.
        ci_low: 2.5th percentile of the bootstrap distribution, or None.
        ci_high: 97.5th percentile of the bootstrap distribution, or None.
        n: number of resampling units (questions).
        resamples: bootstrap resamples drawn.
        undefined_resamples: resamples on which the statistic was undefined (skipped).
        seed: the RNG seed, so the interval is reproducible.
        method: how the interval was computed.
    """

    value: float | None
    stderr: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    resamples: int
    undefined_resamples: int
    seed: int
    method: str = "percentile_bootstrap95"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def is_unscored(value: object) -> bool:
    """True for a missing score: None or NaN (Inspect's ``Score.unscored()`` sentinel)."""
    if value is None:
        return True
    return isinstance(value, float) and math.isnan(value)


def scored_values(values: Sequence[float | bool | None]) -> list[float]:
    """The entries that carry a score, as floats (None and NaN dropped)."""
    return [float(v) for v in values if v is not None and not is_unscored(v)]


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for k successes in n trials."""
    if n <= 0:
        raise ValueError("wilson_interval needs n > 0")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def rate(values: Sequence[float | bool | None]) -> RateEstimate:
    """Estimate the rate of a 0/1 behaviour; None or NaN entries are counted as unscored."""
    scored = scored_values(values)
    unscored = len(values) - len(scored)
    n = len(scored)
    if n == 0:
        return RateEstimate(0, 0, unscored, None, None, None, None)
    k = round(sum(scored))
    p = sum(scored) / n
    low, high = wilson_interval(k, n)
    return RateEstimate(k, n, unscored, p, math.sqrt(p * (1 - p) / n), low, high)


def bootstrap(
    units: Sequence[Any],
    statistic: Callable[[Sequence[Any]], float | None],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> BootstrapEstimate:
    """Percentile bootstrap of ``statistic`` over resampled ``units``.

    Args:
        units: the resampling units (for paired designs, one unit per question holding
            all of its conditions, so the pairing survives resampling).
        statistic: maps a list of units to a number, or None where it is undefined.
        resamples: number of bootstrap resamples.
        seed: RNG seed, recorded in the result.
    """
    n = len(units)
    value = statistic(list(units)) if n else None
    if n == 0 or value is None:
        return BootstrapEstimate(value, None, None, None, n, resamples, resamples, seed)
    rng = np.random.default_rng(seed)
    draws: list[float] = []
    undefined = 0
    for _ in range(resamples):
        idx = rng.integers(0, n, size=n)
        got = statistic([units[i] for i in idx])
        if got is None or math.isnan(got):
            undefined += 1
        else:
            draws.append(got)
    if not draws:
        return BootstrapEstimate(value, None, None, None, n, resamples, undefined, seed)
    arr = np.asarray(draws)
    return BootstrapEstimate(
        value=value,
        stderr=float(arr.std(ddof=1)) if len(arr) > 1 else 0.0,
        ci_low=float(np.percentile(arr, 2.5)),
        ci_high=float(np.percentile(arr, 97.5)),
        n=n,
        resamples=resamples,
        undefined_resamples=undefined,
        seed=seed,
    )


def mean_or_none(values: Sequence[float | None]) -> float | None:
    """Mean of the scored entries, None when there are none."""
    scored = scored_values(values)
    return sum(scored) / len(scored) if scored else None


def paired_gap(
    pairs: Sequence[tuple[float | None, float | None]],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = DEFAULT_SEED,
) -> BootstrapEstimate:
    """Mean(a) - mean(b) over questions answered in both conditions, bootstrapped by question.

    Args:
        pairs: one (a, b) per question, e.g. (neutral accuracy, incentive accuracy); a
            question with either side unscored is left out.
    """
    complete = [
        (float(a), float(b))
        for a, b in pairs
        if a is not None and b is not None and not is_unscored(a) and not is_unscored(b)
    ]

    def gap(units: Sequence[tuple[float, float]]) -> float | None:
        if not units:
            return None
        return sum(a - b for a, b in units) / len(units)

    return bootstrap(complete, gap, resamples=resamples, seed=seed)


@dataclass(frozen=True)
class MeanEstimate:
    """A mean with its standard error and a normal-approximation 95% interval."""

    n: int
    unscored: int
    mean: float | None
    stderr: float | None
    ci_low: float | None
    ci_high: float | None
    method: str = "normal95"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def mean(values: Sequence[float | None]) -> MeanEstimate:
    """Mean of the scored entries with stderr (sample sd / sqrt(n)); None/NaN are unscored."""
    scored = scored_values(values)
    n, unscored = len(scored), len(values) - len(scored)
    if n == 0:
        return MeanEstimate(0, unscored, None, None, None, None)
    m = sum(scored) / n
    se = float(np.std(scored, ddof=1) / math.sqrt(n)) if n > 1 else None
    low = m - Z95 * se if se is not None else None
    high = m + Z95 * se if se is not None else None
    return MeanEstimate(n, unscored, m, se, low, high)
