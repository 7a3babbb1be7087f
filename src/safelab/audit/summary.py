"""Per-dimension summary of an audit log: mean with a bootstrap interval across seeds."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from inspect_ai.log import EvalLog

from safelab.audit.view import SCORER, load_log
from safelab.stats import DEFAULT_RESAMPLES, bootstrap_mean_ci


@dataclass(frozen=True)
class DimensionSummary:
    """One dimension across the samples of a log."""

    name: str
    mean: float
    ci_low: float
    ci_high: float
    n_scored: int
    n_unscored: int


@dataclass(frozen=True)
class AuditSummary:
    """Scores of a whole audit log; unscored samples are counted, never averaged in."""

    log: str
    n_samples: int
    confidence: float
    seed: int
    n_resamples: int
    dimensions: list[DimensionSummary]
    judge_status: dict[str, int] = field(default_factory=dict)
    score_sources: dict[str, int] = field(default_factory=dict)
    """Dimension verdicts (samples x dimensions) by the judge call that scored them
    (``single``, ``per_dimension``) or, for unscored ones, ``unscored:<status>``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise_log(
    log: EvalLog | str | Path,
    n_resamples: int = DEFAULT_RESAMPLES,
    confidence: float = 0.95,
    seed: int = 0,
) -> AuditSummary:
    """Summarise every judged dimension of an audit log.

    A sample with no judge score (sample error) counts as unscored on every dimension, and as
    ``sample_error`` in the status counts.
    """
    eval_log = load_log(log)
    samples = eval_log.samples or []
    values: dict[str, list[float]] = {}
    statuses: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    for s in samples:
        score = (s.scores or {}).get(SCORER)
        if score is None or not isinstance(score.value, dict):
            statuses["sample_error" if s.error else "not_judged"] += 1
            continue
        meta = score.metadata or {}
        statuses[str(meta.get("judge_status", "unknown"))] += 1
        verdicts = meta.get("dimensions", {})
        for name, v in score.value.items():
            values.setdefault(name, []).append(float(v) if v is not None else math.nan)
            dv = verdicts.get(name, {}) if isinstance(verdicts, dict) else {}
            scored = v is not None and not math.isnan(float(v))
            sources[
                str(dv.get("source") or "single")
                if scored
                else f"unscored:{dv.get('status') or 'unknown'}"
            ] += 1
    n = len(samples)
    dims = []
    for name, vals in values.items():
        ci = bootstrap_mean_ci(vals, n_resamples, confidence, seed)
        dims.append(
            DimensionSummary(name, ci.mean, ci.low, ci.high, n_scored=ci.n, n_unscored=n - ci.n)
        )
    return AuditSummary(
        log=str(eval_log.location or log),
        n_samples=n,
        confidence=confidence,
        seed=seed,
        n_resamples=n_resamples,
        dimensions=dims,
        judge_status=dict(sorted(statuses.items())),
        score_sources=dict(sorted(sources.items())),
    )


def format_summary(summary: AuditSummary) -> str:
    """A plain-text table of the summary."""
    pct = round(summary.confidence * 100)
    lines = [
        f"{summary.log}: {summary.n_samples} audits; judge verdicts: "
        + ", ".join(f"{k}={v}" for k, v in summary.judge_status.items()),
        "dimension verdicts: "
        + (", ".join(f"{k}={v}" for k, v in summary.score_sources.items()) or "none"),
        f"{'dimension':<24} {'mean':>6}  {f'{pct}% CI':>15}  {'scored':>6}  {'unscored':>8}",
    ]
    for d in summary.dimensions:
        if d.n_scored:
            ci = f"[{d.ci_low:5.2f}, {d.ci_high:5.2f}]"
            lines.append(
                f"{d.name:<24} {d.mean:6.2f}  {ci:>15}  {d.n_scored:>6}  {d.n_unscored:>8}"
            )
        else:
            lines.append(f"{d.name:<24} {'-':>6}  {'-':>15}  {0:>6}  {d.n_unscored:>8}")
    lines.append(
        f"(scores 1-10; percentile bootstrap over seeds, {summary.n_resamples} resamples, seed {summary.seed})"
    )
    return "\n".join(lines)
