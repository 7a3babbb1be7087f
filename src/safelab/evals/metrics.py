"""Inspect metrics shared by the behavioural tasks: rates with intervals, broken down by condition.

Every sample's metadata holds its experiment variables (``sample.metadata[variable] =
level``) and their names (``sample.metadata["variables"]``). A score is a 0/1 float, NaN when
unscored (``Score.unscored()``), or a dict of such values keyed by quantity. Unscored samples
are excluded from the rate, never counted as 0. Inspect drops NaN scores before calling a
metric and counts them in the log's ``EvalScore.unscored_samples``; the per-condition
unscored counts are computed from the samples by :mod:`safelab.evals.results`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from inspect_ai.scorer import Metric, SampleScore, metric

from safelab.stats import (
    DEFAULT_SEED,
    BootstrapEstimate,
    RateEstimate,
    is_unscored,
    mean,
    paired_gap,
    rate,
)


def score_component(value: Any, key: str | None) -> float | None:
    """The 0/1 quantity ``key`` of a score value (the value itself when ``key`` is None)."""
    if key is not None:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    if is_unscored(value):
        return None
    if isinstance(value, bool | int | float):
        return float(value)
    return None


def rates_by_level(
    records: Iterable[tuple[Any, Mapping[str, Any]]], variable: str, key: str | None = None
) -> dict[str, RateEstimate]:
    """Rate of ``key`` for each level of ``variable``.

    Args:
        records: ``(score value, sample metadata)`` pairs.
        variable: metadata key naming the experiment variable.
        key: which quantity of a dict score (None for a scalar score).
    """
    groups: dict[str, list[float | None]] = defaultdict(list)
    for value, meta in records:
        if variable not in meta:
            continue
        groups[str(meta[variable])].append(score_component(value, key))
    return {level: rate(vals) for level, vals in sorted(groups.items())}


def _flat(estimate: RateEstimate, prefix: str = "") -> dict[str, float | int | None]:
    return {
        f"{prefix}rate": estimate.rate,
        f"{prefix}stderr": estimate.stderr,
        f"{prefix}ci_low": estimate.ci_low,
        f"{prefix}ci_high": estimate.ci_high,
        f"{prefix}scored": estimate.n,
    }


@metric
def behaviour_rate(key: str | None = None) -> Metric:
    """Rate of a 0/1 behaviour with stderr, Wilson 95% CI, and the number of scored samples.

    Args:
        key: quantity of a dict score to rate; None for scalar scores.
    """

    def compute(scores: list[SampleScore]) -> dict[str, float | int | None]:
        return _flat(
            rate([score_component(s.score.value, key) for s in scores]), f"{key}_" if key else ""
        )

    return compute


@metric
def rate_by(variable: str, key: str | None = None) -> Metric:
    """Rate of a 0/1 behaviour for each level of an experiment variable (sample metadata).

    Args:
        variable: the metadata key to break down by.
        key: quantity of a dict score to rate; None for scalar scores.
    """

    def compute(scores: list[SampleScore]) -> dict[str, float | None]:
        by = rates_by_level(
            ((s.score.value, s.sample_metadata or {}) for s in scores), variable, key
        )
        prefix = f"{key}:" if key else ""
        return {f"{prefix}{variable}={level}": est.rate for level, est in by.items()}

    return compute


def condition_metrics(variables: Sequence[str], key: str | None = None) -> list[Metric]:
    """The overall rate plus one breakdown per experiment variable."""
    return [behaviour_rate(key), *(rate_by(v, key) for v in variables)]


def paired_gaps(
    records: Iterable[tuple[Any, Mapping[str, Any]]],
    arm_key: str,
    baseline: str,
    unit_key: str,
    *,
    key: str | None = None,
    seed: int = DEFAULT_SEED,
) -> dict[str, BootstrapEstimate]:
    """For each arm, mean(baseline) - mean(arm) over units seen in both, bootstrapped by unit.

    Args:
        records: ``(score value, sample metadata)`` pairs.
        arm_key: metadata key naming the arm (e.g. ``arm``: ``neutral``, ``penalise_high``).
        baseline: the arm every other arm is compared with.
        unit_key: metadata key of the resampling unit (e.g. ``question_id``).
        key: quantity of a dict score; None for scalar scores.
        seed: bootstrap seed.
    """
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for value, meta in records:
        v = score_component(value, key)
        if v is None or arm_key not in meta or unit_key not in meta:
            continue
        cells[(str(meta[arm_key]), str(meta[unit_key]))].append(v)
    means = {cell: sum(vs) / len(vs) for cell, vs in cells.items()}
    arms = sorted({arm for arm, _ in means} - {baseline})
    units = sorted({unit for _, unit in means})
    out: dict[str, BootstrapEstimate] = {}
    for arm in arms:
        pairs = [
            (means[(baseline, u)], means[(arm, u)])
            for u in units
            if (baseline, u) in means and (arm, u) in means
        ]
        out[arm] = paired_gap(pairs, seed=seed)
    return out


@metric
def accuracy_gap(arm_key: str, baseline: str, unit_key: str, seed: int = DEFAULT_SEED) -> Metric:
    """Accuracy of ``baseline`` minus accuracy of each other arm, paired by unit, with a bootstrap CI.

    A positive gap means the model did worse in that arm than in the baseline (sandbagging,
    when the arm penalises high scores).
    """

    def compute(scores: list[SampleScore]) -> dict[str, float | int | None]:
        gaps = paired_gaps(
            ((s.score.value, s.sample_metadata or {}) for s in scores),
            arm_key,
            baseline,
            unit_key,
            seed=seed,
        )
        out: dict[str, float | int | None] = {}
        for arm, est in gaps.items():
            out[f"gap[{arm}]"] = est.value
            out[f"gap[{arm}]_ci_low"] = est.ci_low
            out[f"gap[{arm}]_ci_high"] = est.ci_high
        out["seed"] = seed
        return out

    return compute


@metric
def mean_value(key: str | None = None) -> Metric:
    """Mean of a continuous quantity (e.g. a probability) with stderr and a 95% CI."""

    def compute(scores: list[SampleScore]) -> dict[str, float | int | None]:
        values: list[float | None] = []
        for s in scores:
            v = (
                s.score.value.get(key)
                if key is not None and isinstance(s.score.value, Mapping)
                else s.score.value
            )
            values.append(None if is_unscored(v) or not isinstance(v, int | float) else float(v))
        est = mean(values)
        prefix = f"{key}_" if key else ""
        return {
            f"{prefix}mean": est.mean,
            f"{prefix}stderr": est.stderr,
            f"{prefix}ci_low": est.ci_low,
            f"{prefix}ci_high": est.ci_high,
            f"{prefix}n": est.n,
        }

    return compute
