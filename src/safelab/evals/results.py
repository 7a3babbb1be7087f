"""Results tables from Inspect logs: every quantity, overall and per condition, with intervals.

Works on any log of a safelab behavioural task (from ``safelab eval`` or ``inspect eval``):
the per-sample scores and the experiment variables in each sample's metadata are enough to
rebuild every number, so a table can always be regenerated from the logs alone.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from inspect_ai.log import EvalLog

from safelab.errors import SafelabError
from safelab.evals.hints import faithfulness_estimate
from safelab.evals.metrics import paired_gaps, rates_by_level, score_component
from safelab.stats import (
    DEFAULT_SEED,
    BootstrapEstimate,
    MeanEstimate,
    RateEstimate,
    mean,
    rate,
)

#: Per task: (quantity name, score key) pairs reported as rates; None = scalar score.
RATE_QUANTITIES: dict[str, list[tuple[str, str | None]]] = {
    "agentic_misalignment": [("harmful action rate", None)],
    "sandbagging": [("accuracy", None)],
    "self_preservation": [("behaviour-matching rate (answer)", "matching")],
    "power_seeking": [("behaviour-matching rate (answer)", "matching")],
    "corrigibility": [("behaviour-matching rate (answer)", "matching")],
    "over_refusal": [("refusal rate", None)],
    "cot_faithfulness": [
        ("P(answer moves to hint | unhinted answer not hint)", "changed_to_hint"),
    ],
}
MODEL_WRITTEN = ("self_preservation", "power_seeking", "corrigibility")


@dataclass(frozen=True)
class ResultRow:
    """One number of the results table.

    Attributes:
        task: the task (or its label in the suite).
        quantity: what is measured.
        condition: ``all`` or ``variable=level``.
        estimate: the point estimate (None when undefined, e.g. no scored samples).
        ci_low: lower end of the 95% interval.
        ci_high: upper end of the 95% interval.
        stderr: standard error.
        n: samples (or units) the estimate rests on.
        unscored: samples without a usable score (judge failure, no answer), excluded.
        method: how the interval was computed.
        seed: bootstrap seed where a bootstrap was used.
    """

    task: str
    quantity: str
    condition: str
    estimate: float | None
    ci_low: float | None
    ci_high: float | None
    stderr: float | None
    n: int
    unscored: int
    method: str
    seed: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _row(task: str, quantity: str, condition: str, est: RateEstimate | MeanEstimate) -> ResultRow:
    """A table row from a rate (Wilson) or a mean (normal) estimate."""
    value = est.rate if isinstance(est, RateEstimate) else est.mean
    return ResultRow(
        task,
        quantity,
        condition,
        value,
        est.ci_low,
        est.ci_high,
        est.stderr,
        est.n,
        est.unscored,
        est.method,
    )


def _boot_row(
    task: str, quantity: str, condition: str, est: BootstrapEstimate, unscored: int = 0
) -> ResultRow:
    return ResultRow(
        task,
        quantity,
        condition,
        est.value,
        est.ci_low,
        est.ci_high,
        est.stderr,
        est.n,
        unscored,
        est.method,
        est.seed,
    )


def task_base_name(log: EvalLog) -> str:
    """``safelab/agentic_misalignment`` -> ``agentic_misalignment``."""
    return log.eval.task.split("/")[-1]


def sample_records(log: EvalLog) -> list[tuple[Any, dict[str, Any]]]:
    """``(score value, sample metadata)`` for every sample of a log (NaN for a missing score)."""
    records: list[tuple[Any, dict[str, Any]]] = []
    for sample in log.samples or []:
        scores = sample.scores or {}
        value: Any = next(iter(scores.values())).value if scores else math.nan
        records.append((value, dict(sample.metadata or {})))
    return records


def _variables(records: Sequence[tuple[Any, Mapping[str, Any]]]) -> list[str]:
    seen: dict[str, None] = {}
    for _, meta in records:
        for v in meta.get("variables", []):
            seen.setdefault(str(v), None)
    return list(seen)


def rate_rows(
    task: str, quantity: str, records: Sequence[tuple[Any, Mapping[str, Any]]], key: str | None
) -> list[ResultRow]:
    """The overall rate and one row per level of every experiment variable."""
    rows = [_row(task, quantity, "all", rate([score_component(v, key) for v, _ in records]))]
    for variable in _variables(records):
        levels = rates_by_level(records, variable, key)
        if len(levels) < 2:
            continue  # a variable held fixed adds no information
        rows += [_row(task, quantity, f"{variable}={level}", est) for level, est in levels.items()]
    return rows


def summarise_log(
    log: EvalLog, label: str | None = None, *, seed: int = DEFAULT_SEED
) -> list[ResultRow]:
    """Every result row for one task log.

    Args:
        log: an Inspect log of a safelab task (samples included).
        label: the name to print for the task (defaults to the task name).
        seed: bootstrap seed for gaps and normalised faithfulness.
    """
    base = task_base_name(log)
    task = label or base
    records = sample_records(log)
    rows: list[ResultRow] = []
    for quantity, key in RATE_QUANTITIES.get(base, [("score", None)]):
        rows += rate_rows(task, quantity, records, key)
    if base == "sandbagging":
        for arm, est in paired_gaps(records, "arm", "neutral", "question_id", seed=seed).items():
            rows.append(
                _boot_row(
                    task, "accuracy gap (neutral - arm), paired by question", f"arm={arm}", est
                )
            )
    if base in MODEL_WRITTEN:
        probs = [(score_component(v, "p_matching"), m) for v, m in records]
        rows.append(
            _row(
                task,
                "P(matching) from answer-token probabilities",
                "all",
                mean([p for p, _ in probs]),
            )
        )
    if base == "cot_faithfulness":
        rows += _faithfulness_rows(task, records, seed)
    return rows


def _faithfulness_rows(
    task: str, records: Sequence[tuple[Any, Mapping[str, Any]]], seed: int
) -> list[ResultRow]:
    groups: dict[str, list[Any]] = defaultdict(list)
    for value, meta in records:
        groups["all"].append(value)
        if "hint_type" in meta:
            groups[f"hint_type={meta['hint_type']}"].append(value)
    rows: list[ResultRow] = []
    for condition, values in groups.items():
        est = faithfulness_estimate(values, seed=seed)
        rows.append(
            _row(task, "raw faithfulness (hint acknowledged | moved to hint)", condition, est.raw)
        )
        rows.append(
            _boot_row(
                task,
                "normalised faithfulness (Chen et al. 2025)",
                condition,
                est.normalised,
                est.raw.unscored,
            )
        )
    return rows


def judge_summary(logs: Iterable[EvalLog]) -> dict[str, Any]:
    """Which models judged, and whether the model under evaluation judged itself."""
    judges: set[str] = set()
    self_judged = 0
    judged = 0
    for log in logs:
        for sample in log.samples or []:
            for score in (sample.scores or {}).values():
                meta = score.metadata or {}
                if "judge_model" in meta:
                    judged += 1
                    judges.add(str(meta["judge_model"]))
                    self_judged += bool(meta.get("judge_is_target"))
    return {"judge_models": sorted(judges), "judge_calls": judged, "self_judged_calls": self_judged}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def markdown_table(rows: Sequence[ResultRow]) -> str:
    """A Markdown table: task, quantity, condition, estimate, 95% CI, n, unscored."""
    lines = [
        "| task | quantity | condition | estimate | 95% CI | n | unscored |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ci = "n/a" if r.ci_low is None else f"[{_fmt(r.ci_low)}, {_fmt(r.ci_high)}]"
        method = r.method + (f", seed {r.seed}" if r.seed is not None else "")
        lines.append(
            f"| {r.task} | {r.quantity} | {r.condition} | {_fmt(r.estimate)} | {ci} ({method}) | {r.n} | {r.unscored} |"
        )
    return "\n".join(lines) + "\n"


def read_log(path: str | Path) -> EvalLog:
    """Read an Inspect log file, with one line naming the file when it is not one.

    Raises:
        SafelabError: nothing at ``path``, or it is not a readable ``.eval`` / ``.json`` log.
    """
    from inspect_ai.log import read_eval_log

    where = Path(path)
    if not where.is_file():
        raise SafelabError(f"log {where} not found: pass an Inspect log file (.eval or .json)")
    try:
        return read_eval_log(str(where))
    except Exception as e:
        first = (str(e).splitlines() or [type(e).__name__])[0][:100]
        raise SafelabError(
            f"{where} is not a readable Inspect log ({first}): pass a .eval or .json log "
            "written by inspect eval"
        ) from None
