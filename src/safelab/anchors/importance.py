"""Resampling, counterfactual and forced-answer importance of each sentence.

``P_k`` is the distribution of final answers over rollouts resampled from the prefix before
sentence ``k`` (``k = n``: after the whole reasoning). For sentence ``i``:

- resampling importance ``KL(P_{i+1} || P_i)``: what keeping sentence ``i`` changes, against
  resampling it;
- counterfactual importance ``KL(P_{i+1} || P_i^cf)``, where ``P_i^cf`` keeps only the rollouts
  from prefix ``i`` whose first new sentence is semantically different from sentence ``i``
  (cosine similarity below a threshold under a sentence embedder);
- forced-answer importance ``KL(F_{i+1} || F_i)``, where ``F_k`` is the model's distribution over
  the candidate answers when made to answer right after prefix ``k`` (no sampling).

Distributions are over the trace's answer categories with Laplace smoothing (``alpha`` added to
every count). Unscorable rollouts (no answer found) are excluded from ``P`` and counted. A rollout
counts as a weight row: one-hot for an answer it wrote (or an elicited answer drawn), or, with
``elicited="expected"``, the distribution its elicited answer would be drawn from.
Intervals: percentile bootstrap over rollouts, both sets resampled independently.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def counts(answers: Sequence[int], n_categories: int) -> np.ndarray:
    return np.bincount(np.asarray(answers, dtype=np.int64), minlength=n_categories).astype(float)


def smoothed(c: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    c = np.asarray(c, dtype=float) + alpha
    return c / c.sum()


def kl(p: np.ndarray, q: np.ndarray) -> float:
    """``KL(p || q)`` in nats; both strictly positive (smoothed)."""
    return float(np.sum(p * (np.log(p) - np.log(q))))


def kl_counts(a: np.ndarray, b: np.ndarray, alpha: float = 1.0) -> float:
    """``KL`` between the Laplace-smoothed distributions of two count vectors."""
    return kl(smoothed(a, alpha), smoothed(b, alpha))


def one_hot(answers: Sequence[int], n_categories: int) -> np.ndarray:
    """``[n, n_categories]`` rows, one per rollout: the weight each gives each answer."""
    out = np.zeros((len(answers), n_categories))
    out[np.arange(len(answers)), np.asarray(answers, dtype=np.int64)] = 1.0
    return out


def kl_answers(
    kept: Sequence[int], resampled: Sequence[int], n_categories: int, alpha: float = 1.0
) -> float:
    """``KL(P_kept || P_resampled)``; NaN when either side has no scorable rollout."""
    return kl_weights(one_hot(kept, n_categories), one_hot(resampled, n_categories), alpha)


def kl_weights(kept: np.ndarray, resampled: np.ndarray, alpha: float = 1.0) -> float:
    """:func:`kl_answers` for rollouts given as weight rows (a one-hot row for an answer, or the
    distribution an elicited answer is drawn from); NaN when either side has no rollout."""
    if len(kept) == 0 or len(resampled) == 0:
        return float("nan")
    return kl_counts(np.asarray(kept).sum(0), np.asarray(resampled).sum(0), alpha)


def bootstrap_kl(
    kept: Sequence[int],
    resampled: Sequence[int],
    n_categories: int,
    alpha: float = 1.0,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile 95% interval of :func:`kl_answers`, resampling each side's rollouts."""
    return bootstrap_kl_weights(
        one_hot(kept, n_categories), one_hot(resampled, n_categories), alpha, n_boot, seed
    )


def bootstrap_kl_weights(
    kept: np.ndarray,
    resampled: np.ndarray,
    alpha: float = 1.0,
    n_boot: int = 1000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile 95% interval of :func:`kl_weights`, resampling each side's rollouts."""
    if len(kept) == 0 or len(resampled) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    a = np.asarray(kept, dtype=float)
    b = np.asarray(resampled, dtype=float)
    ia = rng.integers(0, len(a), size=(n_boot, len(a)))
    ib = rng.integers(0, len(b), size=(n_boot, len(b)))
    ca = a[ia].sum(1) + alpha
    cb = b[ib].sum(1) + alpha
    p = ca / ca.sum(1, keepdims=True)
    q = cb / cb.sum(1, keepdims=True)
    vals = np.sum(p * (np.log(p) - np.log(q)), axis=1)
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return float(lo), float(hi)


def forced_kl(kept: np.ndarray, resampled: np.ndarray) -> float:
    """``KL(F_kept || F_resampled)`` of two forced-answer distributions (already normalised)."""
    eps = 1e-9
    p = np.clip(np.asarray(kept, dtype=float), eps, None)
    q = np.clip(np.asarray(resampled, dtype=float), eps, None)
    return kl(p / p.sum(), q / q.sum())


def ranks(scores: Sequence[float]) -> list[int]:
    """1-based rank of each score, highest first; NaN scores rank last (ties by position)."""
    s = np.asarray(scores, dtype=float)
    key = np.where(np.isnan(s), -np.inf, s)
    order = sorted(range(len(s)), key=lambda i: (-key[i], i))
    out = [0] * len(s)
    for r, i in enumerate(order):
        out[i] = r + 1
    return out
