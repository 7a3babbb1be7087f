"""Detector metrics with bootstrap confidence intervals: accuracy, AUROC, recall at a fixed FPR.

Scores are "higher = more positive"; labels are 0/1. Every interval is a percentile bootstrap
over examples (resampled with replacement, stratified by label so both classes are always
present) with a recorded seed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from safelab.errors import SafelabError

ArrayLike = Any
DEFAULT_RESAMPLES = 1000


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
