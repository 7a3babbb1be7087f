"""Statistics with intervals, one module for the whole lab: every figure safelab reports comes from here.

- Detector metrics (:func:`detector_metrics`: AUROC, accuracy, recall at a fixed FPR) get a
  percentile bootstrap over examples, stratified by label so both classes are always present.
- Rates (the fraction of samples showing a behaviour, :func:`rate`) get a standard error and a
  Wilson 95% interval, which stays honest at the small sample sizes a laptop run produces (0 of 4
  is reported as [0, 0.49], not [0, 0]).
- Statistics that are not a plain proportion (an accuracy gap between paired conditions, a
  normalised faithfulness score, a judge's mean score across seeds) get a seeded percentile
  bootstrap over the unit of resampling (:func:`bootstrap`, :func:`paired_gap`,
  :func:`mean_ci`, :func:`bootstrap_mean_ci`).

Every bootstrap draws :data:`DEFAULT_RESAMPLES` resamples unless told otherwise, and every result
records its seed and resample count. Scores are "higher = more positive"; labels are 0/1.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from safelab.errors import SafelabError

ArrayLike = Any
Z95 = 1.959963984540054
DEFAULT_SEED = 0
# One number for the whole lab. interp/metrics.py used 1000 and evals/stats.py and
# audit/stats.py 2000 before they merged here: the probe, monitor, SAE, w2s and loop figures are
# unchanged; the evals' bootstrap intervals (paired gaps, faithfulness) and the audit summary's
# now draw 1000 (pass ``resamples=2000`` / ``n_resamples=2000`` to reproduce an older figure).
DEFAULT_RESAMPLES = 1000


# -- detector metrics ----------------------------------------------------------------------


def _arrays(scores: ArrayLike, labels: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).astype(int).ravel()
    if s.shape != y.shape:
        raise SafelabError(f"{s.shape[0]} scores but {y.shape[0]} labels")
    if not np.isfinite(s).all():
        raise SafelabError("scores contain NaN or inf: drop unscored examples first")
    return s, y


def auroc(scores: ArrayLike, labels: ArrayLike) -> float:
    """Area under the ROC curve (ties count one half): P(score_pos > score_neg)."""
    s, y = _arrays(scores, labels)
    return _auroc(s[y == 1], s[y == 0])


def _auroc(pos: np.ndarray, neg: np.ndarray) -> float:
    if len(pos) == 0 or len(neg) == 0:
        raise SafelabError("AUROC needs at least one positive and one negative example")
    neg = np.sort(neg)
    below = np.searchsorted(neg, pos, side="left")
    ties = np.searchsorted(neg, pos, side="right") - below
    return float((below.sum() + 0.5 * ties.sum()) / (len(pos) * len(neg)))


def threshold_at_fpr(neg_scores: ArrayLike, fpr: float) -> float:
    """The lowest threshold ``t`` with ``mean(neg > t) <= fpr`` among the negatives' scores.

    Flagging ``score > t`` then keeps the false-positive rate at or under ``fpr``.
    """
    neg = np.sort(np.asarray(neg_scores, dtype=np.float64).ravel())[::-1]
    if len(neg) == 0:
        raise SafelabError("recall at a fixed FPR needs at least one negative example")
    allowed = int(np.floor(fpr * len(neg) + 1e-9))
    if allowed >= len(neg):
        return -np.inf
    return float(neg[allowed])


def recall_at_fpr(scores: ArrayLike, labels: ArrayLike, fpr: float = 0.01) -> float:
    """Share of positives flagged (``score > t``) at the threshold that keeps FPR ≤ ``fpr``."""
    s, y = _arrays(scores, labels)
    if (y == 1).sum() == 0:
        raise SafelabError("recall needs at least one positive example")
    t = threshold_at_fpr(s[y == 0], fpr)
    return float((s[y == 1] > t).mean())


def accuracy(scores: ArrayLike, labels: ArrayLike, threshold: float = 0.5) -> float:
    s, y = _arrays(scores, labels)
    return float(((s > threshold).astype(int) == y).mean())


def bootstrap_ci(
    fn: Callable[[np.ndarray, np.ndarray], float],
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``fn(scores, labels)``, resampling within each class."""
    return bootstrap_cis(
        [fn], scores, labels, n_resamples=n_resamples, confidence=confidence, seed=seed
    )[0]


def bootstrap_cis(
    fns: Sequence[Callable[[np.ndarray, np.ndarray], float]],
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> list[tuple[float, float]]:
    """Intervals of several statistics over the same stratified resamples."""
    s, y = _arrays(scores, labels)
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(y == c) for c in (0, 1) if (y == c).any()]
    values = np.empty((len(fns), n_resamples))
    for i in range(n_resamples):
        idx = np.concatenate([g[rng.integers(0, len(g), size=len(g))] for g in groups])
        for k, fn in enumerate(fns):
            values[k, i] = fn(s[idx], y[idx])
    alpha = (1 - confidence) / 2
    return [tuple(float(v) for v in np.quantile(row, [alpha, 1 - alpha])) for row in values]  # type: ignore[misc]


def mean_ci(
    values: ArrayLike,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """Mean and its percentile bootstrap interval."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if len(v) == 0:
        raise SafelabError("no values to average")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_resamples, len(v)))].mean(1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return float(v.mean()), float(lo), float(hi)


@dataclass
class DetectorMetrics:
    """Held-out metrics of one detector, each with a bootstrap interval."""

    n: int
    n_pos: int
    auroc: float
    auroc_ci: list[float]
    accuracy: float
    accuracy_ci: list[float]
    recall_at_1pct_fpr: float
    recall_at_1pct_fpr_ci: list[float]
    seed: int
    n_resamples: int
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def detector_metrics(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    threshold: float = 0.5,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> DetectorMetrics:
    """AUROC, accuracy (``score > threshold``) and recall at 1% FPR, with intervals."""
    s, y = _arrays(scores, labels)
    kw: dict[str, Any] = {"n_resamples": n_resamples, "confidence": confidence, "seed": seed}

    def acc(a: np.ndarray, b: np.ndarray) -> float:
        return accuracy(a, b, threshold)

    ci_auroc, ci_acc, ci_recall = bootstrap_cis([auroc, acc, recall_at_fpr], s, y, **kw)
    return DetectorMetrics(
        n=len(y),
        n_pos=int(y.sum()),
        auroc=auroc(s, y),
        auroc_ci=list(ci_auroc),
        accuracy=acc(s, y),
        accuracy_ci=list(ci_acc),
        recall_at_1pct_fpr=recall_at_fpr(s, y, 0.01),
        recall_at_1pct_fpr_ci=list(ci_recall),
        seed=seed,
        n_resamples=n_resamples,
        confidence=confidence,
    )


def roc_points(scores: ArrayLike, labels: ArrayLike) -> tuple[list[float], list[float]]:
    """(FPR, TPR) points of the ROC curve."""
    from sklearn.metrics import roc_curve

    s, y = _arrays(scores, labels)
    fpr, tpr, _ = roc_curve(y, s)
    return [float(v) for v in fpr], [float(v) for v in tpr]


# -- rates and bootstrap over units --------------------------------------------------------


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


def newcombe_interval(k1: int, n1: int, k2: int, n2: int) -> tuple[float, float, float]:
    """p1 - p2 and Newcombe's (1998, method 10) hybrid Wilson 95% interval for it.

    For two independent rates; unlike a bootstrap it stays wide at the edges (8/8 vs 0/8:
    +1.00 [+0.54, +1.00], where a bootstrap gives the zero-width [1.00, 1.00]).
    """
    return mover_interval([(1, k1, n1), (-1, k2, n2)])


def mover_interval(
    terms: Sequence[tuple[float, int, int]],
) -> tuple[float, float, float]:
    """A linear combination of independent rates, sum of ``c * k / n`` over ``(c, k, n)``,
    and its MOVER 95% interval with Wilson limits (Zou & Donner 2008).

    The method of :func:`newcombe_interval` for any number of rates: each rate's distance to
    its Wilson limit on the side that lowers (raises) the sum is added in quadrature. With
    ``[(1, k1, n1), (-1, k2, n2)]`` it is Newcombe's method 10 exactly; with four terms
    ``(+1, -1, -1, +1)`` it is the interval of a difference of two differences (an organism's
    present-minus-control contrast minus the base model's).
    """
    if not terms or any(n <= 0 for _, _, n in terms):
        raise ValueError("mover_interval needs at least one rate, each with n >= 1")
    est = 0.0
    below = above = 0.0
    for c, k, n in terms:
        p = k / n
        lo, hi = wilson_interval(k, n)
        est += c * p
        if c >= 0:
            below += (c * (p - lo)) ** 2
            above += (c * (hi - p)) ** 2
        else:
            below += (c * (hi - p)) ** 2
            above += (c * (p - lo)) ** 2
    return est, est - math.sqrt(below), est + math.sqrt(above)


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
    values: Sequence[float],
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = DEFAULT_SEED,
) -> MeanInterval:
    """Mean of ``values`` with a seeded percentile-bootstrap interval (NaN when empty)."""
    x = np.asarray([v for v in values if not math.isnan(v)], dtype=float)
    if x.size == 0:
        return MeanInterval(math.nan, math.nan, math.nan, 0, confidence, seed)
    m, low, high = mean_ci(x, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return MeanInterval(m, low, high, int(x.size), confidence, seed)
