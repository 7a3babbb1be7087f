"""Performance gap recovered (PGR) with bootstrap intervals over test items and over seeds.

``PGR = (student - weak) / (ceiling - weak)`` on test accuracy: 0 when the student only matches
its supervisor, 1 when it does as well as the same student trained on ground truth. When the
ceiling is not above the weak supervisor there is no gap to recover and PGR is *undefined*:
it is reported as such (``value=None`` with a reason), never as NaN or infinity.

Intervals are percentile bootstraps. Over test items, every resample draws the same items for
weak, student and ceiling (a paired bootstrap). Over seeds and items together, a resample draws
seeds with replacement and then items with replacement, and computes the PGR of the mean
accuracies. Resamples where the gap vanishes are counted; if more than ``max_undefined`` of
them are undefined the interval is withheld (``ci=None``), since dropping them would bias it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from safelab.errors import SafelabError

MIN_GAP = 1e-9
DEFAULT_RESAMPLES = 2000


@dataclass
class PerformanceGapRecovered:
    """One PGR estimate and its interval, or why it is undefined."""

    value: float | None
    ci: list[float] | None
    weak: float
    student: float
    ceiling: float
    reason: str = ""
    """Empty when defined; otherwise why the value or the interval is missing."""
    over: str = "items"
    """What the interval resamples: ``items`` or ``seeds+items``."""
    n_resamples: int = DEFAULT_RESAMPLES
    undefined_resamples: int = 0
    confidence: float = 0.95
    seed: int = 0

    @property
    def defined(self) -> bool:
        return self.value is not None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "defined": self.defined}

    def __str__(self) -> str:
        if self.value is None:
            return f"undefined ({self.reason})"
        if self.ci is None:
            return f"{self.value:.2f} (interval withheld: {self.reason})"
        return f"{self.value:.2f} [{self.ci[0]:.2f}, {self.ci[1]:.2f}]"


def pgr_value(weak: float, student: float, ceiling: float) -> float | None:
    """``(student - weak) / (ceiling - weak)``, or None when ``ceiling <= weak``."""
    gap = ceiling - weak
    if gap <= MIN_GAP:
        return None
    return (student - weak) / gap


def _as_2d(a: Any, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] == 0:
        raise SafelabError(f"{name}: expected per-item correctness [seeds, items], got {arr.shape}")
    return arr


def _interval(
    values: np.ndarray, undefined: int, n: int, confidence: float, max_undefined: float
) -> tuple[list[float] | None, str]:
    if undefined > max_undefined * n or len(values) == 0:
        return None, (
            f"the gap (ceiling - weak) vanished in {undefined} of {n} resamples: interval withheld"
        )
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(values, [alpha, 1 - alpha])
    return [float(lo), float(hi)], ""


def performance_gap_recovered(
    weak_correct: Any,
    student_correct: Any,
    ceiling_correct: Any,
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
    max_undefined: float = 0.025,
) -> PerformanceGapRecovered:
    """PGR of test accuracy from per-item correctness (0/1), with a bootstrap interval.

    Each argument is ``[items]`` (one seed: the interval is over test items) or
    ``[seeds, items]`` (the interval resamples seeds, then items). All three share the same
    test items in the same order; ``weak_correct`` may have one row shared by every seed.
    """
    w = _as_2d(weak_correct, "weak")
    s = _as_2d(student_correct, "student")
    c = _as_2d(ceiling_correct, "ceiling")
    n_seeds = s.shape[0]
    if w.shape[0] == 1 and n_seeds > 1:
        w = np.repeat(w, n_seeds, axis=0)
    if not (w.shape == s.shape == c.shape):
        raise SafelabError(
            f"PGR inputs disagree in shape: weak {w.shape}, student {s.shape}, ceiling {c.shape}"
        )
    n_items = s.shape[1]
    accs = (float(w.mean()), float(s.mean()), float(c.mean()))
    value = pgr_value(*accs)
    over = "items" if n_seeds == 1 else "seeds+items"
    out = PerformanceGapRecovered(
        value, None, *accs, over=over, n_resamples=n_resamples, confidence=confidence, seed=seed
    )
    if value is None:
        out.reason = f"ceiling accuracy {accs[2]:.3f} <= weak accuracy {accs[0]:.3f}: no gap"
        return out
    rng = np.random.default_rng(seed)
    draws = np.empty(n_resamples)
    ok = np.zeros(n_resamples, dtype=bool)
    for r in range(n_resamples):
        seeds = rng.integers(0, n_seeds, size=n_seeds) if n_seeds > 1 else np.zeros(1, dtype=int)
        items = rng.integers(0, n_items, size=n_items)
        a = [float(m[seeds][:, items].mean()) for m in (w, s, c)]
        v = pgr_value(*a)
        if v is not None:
            draws[r], ok[r] = v, True
    out.undefined_resamples = int((~ok).sum())
    out.ci, out.reason = _interval(
        draws[ok], out.undefined_resamples, n_resamples, confidence, max_undefined
    )
    return out


def seed_interval(
    per_seed: list[PerformanceGapRecovered],
    *,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, Any]:
    """Mean of per-seed PGRs with a bootstrap interval over seeds (None if any is undefined)."""
    values = [p.value for p in per_seed]
    if not values or any(v is None for v in values):
        return {"mean": None, "ci": None, "reason": "PGR undefined for at least one seed"}
    v = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, len(v), size=(n_resamples, len(v)))].mean(1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(means, [alpha, 1 - alpha])
    return {"mean": float(v.mean()), "ci": [float(lo), float(hi)], "values": v.tolist()}
