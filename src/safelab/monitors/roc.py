"""Compare monitors on an Inspect log against ground-truth labels in sample metadata.

For every scorer in the log: ROC curve, AUROC and recall at 1% FPR, each with a bootstrap
interval, over the samples it scored. Samples it could not score (NaN / non-numeric values,
``Score.unscored``) are counted and listed by reason, never dropped silently or counted as
safe; samples without a label are counted too.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safelab.errors import SafelabError
from safelab.stats import DEFAULT_RESAMPLES, detector_metrics, roc_points

_POSITIVE = {"1", "1.0", "true", "yes", "deceptive", "lie", "unsafe", "positive", "harmful"}
_NEGATIVE = {"0", "0.0", "false", "no", "honest", "truthful", "safe", "negative", "harmless"}


def parse_label(value: Any, positive: str | None = None) -> int | None:
    """1 (positive: deceptive/unsafe), 0, or None when missing or not a recognised label."""
    if value is None:
        return None
    text = str(value).strip().lower()
    if positive is not None:
        return 1 if text == positive.strip().lower() else 0
    if isinstance(value, bool):
        return int(value)
    if text in _POSITIVE:
        return 1
    if text in _NEGATIVE:
        return 0
    return None


@dataclass
class MonitorResult:
    name: str
    n_scored: int
    n_unscored: int
    unscored_reasons: dict[str, int]
    auroc: float | None = None
    auroc_ci: list[float] | None = None
    recall_at_1pct_fpr: float | None = None
    recall_at_1pct_fpr_ci: list[float] | None = None
    accuracy_at_half: float | None = None
    roc: dict[str, list[float]] = field(default_factory=dict)
    note: str = ""
    control: dict[str, Any] | None = None
    """With a base log: :meth:`safelab.interp.base_control.BaseControl.to_dict` on the samples
    (matched by id) that both logs scored, plus ``n_paired``."""


@dataclass
class MonitorReport:
    log: str
    label_key: str
    n_samples: int
    n_labelled: int
    n_positive: int
    seed: int
    n_resamples: int
    monitors: dict[str, MonitorResult]
    base_log: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _value(score: Any) -> float | None:
    v = getattr(score, "value", None)
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, int | float):
        return None if math.isnan(v) else float(v)
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
        return None if math.isnan(f) else f
    return None


def _read_log(path: Path) -> Any:
    from inspect_ai.log import read_eval_log

    if not path.exists():
        raise SafelabError(f"log not found: {path}: give an Inspect .eval or .json log")
    try:
        return read_eval_log(str(path))
    except Exception as e:
        raise SafelabError(f"{path} is not a readable Inspect log ({str(e)[:100]})") from None


def monitor_report(
    log: str | Path,
    label_key: str = "label",
    *,
    base_log: str | Path | None = None,
    positive: str | None = None,
    monitors: list[str] | None = None,
    flip: list[str] | None = None,
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> MonitorReport:
    """Score each monitor (scorer) in ``log`` against ``sample.metadata[label_key]``.

    Args:
        positive: the label value that counts as positive (default: 1/true/deceptive/unsafe...).
        monitors: scorer names to include (default: all).
        flip: scorer names whose values are negated (low = suspicious).
        base_log: the same samples (same ids) run on the base model: each monitor's base
            control (:func:`safelab.interp.base_control.base_control`) on the samples both
            logs scored, with the labels of ``log``.
    """
    path = Path(log)
    ev = _read_log(path)
    base_values: dict[str, dict[str, float]] = {}
    if base_log is not None:
        for s in _read_log(Path(base_log)).samples or []:
            for k, sc in (s.scores or {}).items():
                v = _value(sc)
                if v is not None:
                    base_values.setdefault(k, {})[str(s.id)] = v
        if not base_values:
            raise SafelabError(f"{base_log} has no scored samples: run the same eval on the base")
    samples = ev.samples or []
    if not samples:
        raise SafelabError(f"{path} has no samples")
    labels: list[int | None] = [
        parse_label((s.metadata or {}).get(label_key), positive) for s in samples
    ]
    labelled = [y for y in labels if y is not None]
    if not labelled:
        raise SafelabError(
            f"no sample in {path} has a recognised metadata[{label_key!r}] label: "
            "use --label to name the metadata key (and --positive for its positive value)"
        )
    names = monitors or sorted({k for s in samples for k in (s.scores or {})})
    if not names:
        raise SafelabError(f"{path} has no scores: run the eval with monitor scorers")
    flipped = set(flip or [])
    results: dict[str, MonitorResult] = {}
    for name in names:
        xs: list[float] = []
        ys: list[int] = []
        reasons: Counter[str] = Counter()
        for s, y in zip(samples, labels, strict=True):
            if y is None:
                continue
            sc = (s.scores or {}).get(name)
            v = _value(sc) if sc is not None else None
            if v is None:
                reason = "missing" if sc is None else str(getattr(sc, "answer", None) or "unscored")
                reasons[reason] += 1
                continue
            xs.append(-v if name in flipped else v)
            ys.append(y)
        res = MonitorResult(name, len(xs), sum(reasons.values()), dict(reasons))
        if len(set(ys)) < 2:
            res.note = "needs scored samples of both labels for ROC"
        else:
            m = detector_metrics(xs, ys, n_resamples=n_resamples, seed=seed)
            fpr, tpr = roc_points(xs, ys)
            res.auroc, res.auroc_ci = m.auroc, m.auroc_ci
            res.recall_at_1pct_fpr, res.recall_at_1pct_fpr_ci = (
                m.recall_at_1pct_fpr,
                m.recall_at_1pct_fpr_ci,
            )
            res.accuracy_at_half = m.accuracy if name not in flipped else None
            res.roc = {"fpr": fpr, "tpr": tpr}
        if base_log is not None:
            res.control = _paired(
                samples, labels, name, base_values.get(name, {}), name in flipped, n_resamples, seed
            )
        results[name] = res
    return MonitorReport(
        str(path),
        label_key,
        len(samples),
        len(labelled),
        sum(labelled),
        seed,
        n_resamples,
        results,
        str(base_log) if base_log is not None else None,
    )


def _paired(
    samples: list[Any],
    labels: list[int | None],
    name: str,
    base: dict[str, float],
    flipped: bool,
    n_resamples: int,
    seed: int,
) -> dict[str, Any] | None:
    from safelab.interp.base_control import base_control

    org, bs, ys = [], [], []
    for s, y in zip(samples, labels, strict=True):
        sc = (s.scores or {}).get(name)
        v = _value(sc) if sc is not None else None
        if y is None or v is None or str(s.id) not in base:
            continue
        sign = -1.0 if flipped else 1.0
        org.append(sign * v)
        bs.append(sign * base[str(s.id)])
        ys.append(y)
    if len(set(ys)) < 2:
        return None
    ctl = base_control(org, bs, ys, seed=seed, n_resamples=n_resamples, select=False)
    return ctl.to_dict() | {"n_paired": len(ys)}


def format_report(report: MonitorReport) -> str:
    lines = [
        f"{report.log}: {report.n_samples} samples, {report.n_labelled} labelled "
        f"({report.n_positive} positive by metadata[{report.label_key!r}]); seed {report.seed}",
        f"{'monitor':<28} {'scored':>6} {'unscored':>8}  {'AUROC [95% CI]':<24} {'recall@1%FPR [95% CI]':<24}",
    ]
    for r in report.monitors.values():
        if r.auroc is None:
            cells = f"{'n/a':<24} {'n/a':<24} {r.note}"
        else:
            assert r.auroc_ci is not None and r.recall_at_1pct_fpr_ci is not None
            cells = (
                f"{r.auroc:.3f} [{r.auroc_ci[0]:.3f}, {r.auroc_ci[1]:.3f}]".ljust(24)
                + " "
                + f"{r.recall_at_1pct_fpr:.3f} [{r.recall_at_1pct_fpr_ci[0]:.3f}, {r.recall_at_1pct_fpr_ci[1]:.3f}]".ljust(
                    24
                )
            )
        lines.append(f"{r.name:<28} {r.n_scored:>6} {r.n_unscored:>8}  {cells}")
        if report.base_log is not None:
            c = (r.control or {}).get("selected")
            lines.append(
                f"    base model ({r.control['n_paired']} paired): AUROC {c['base_auroc']:.3f} "
                f"[{c['base_auroc_ci'][0]:.3f}, {c['base_auroc_ci'][1]:.3f}], gain "
                f"{c['gain']:+.3f} [{c['gain_ci'][0]:+.3f}, {c['gain_ci'][1]:+.3f}]"
                + (
                    "; READS THE INPUT, NOT THE BEHAVIOUR"
                    if r.control["reads_input_not_behaviour"]
                    else ""
                )
                if c and r.control
                else "    base model: no paired samples of both labels"
            )
        if r.unscored_reasons:
            lines.append(
                "    unscored: "
                + ", ".join(f"{k} x{v}" for k, v in sorted(r.unscored_reasons.items()))
            )
    return "\n".join(lines)
