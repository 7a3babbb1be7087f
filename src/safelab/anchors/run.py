"""``AnchorsConfig`` -> ``run_anchors(cfg, out)`` -> ``AnchorsResult``: thought anchors on traces.

``<out>/rollouts/<trace>/<k>.json`` caches the rollouts per (trace, prefix) and
``<out>/traces/<trace>.json`` each finished trace, so a killed run resumes without repeating
finished work. ``metrics.json`` (written atomically) holds the config, every trace and the
summary: the planted sentence's rank under each method, the false-anchor rate on controls, the
agreement between methods (Spearman) and the unscorable rollouts.

The anchor rule (stated before any figure): sentence ``i`` is an *anchor* when the lower end of
the 95% bootstrap interval of its resampling importance is at least ``anchor_threshold`` nats.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from safelab.anchors.analyse import METHODS, AnalysisSettings, analyse_trace
from safelab.anchors.rollouts import RolloutSettings, check_fits
from safelab.anchors.traces import Trace, read_rows
from safelab.config import option
from safelab.errors import SafelabError
from safelab.files import atomic_write_text

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel

BUILTIN = ("planted", "comparison", "addition", "agentic")


@dataclass(frozen=True)
class AnchorsConfig:
    """Everything that defines a run; saved in metrics.json."""

    data: str | None = option(
        "planted",
        "planted (ground truth), comparison, addition, agentic, or a .jsonl of traces "
        "(question, reasoning, answer[, options]) or questions; ignored with a prompt",
    )
    prompt: str | None = option(
        None, "one question: the model writes its trace, then it is analysed"
    )
    model: str = option("default", "the model")
    rollouts: int = option(20, "rollouts per prefix")
    temperature: float = option(0.6, "rollout temperature")
    top_p: float = option(0.95, "rollout nucleus (top-p)")
    max_new_tokens: int = option(64, "tokens per rollout")
    similarity: float = option(0.8, "counterfactual cosine threshold")
    embedder: str = option("auto", "sentence embedder: auto, minilm or model (mean-pooled states)")
    alpha: float = option(1.0, "Laplace smoothing of the answer distributions")
    n_boot: int = option(1000, "bootstrap resamples over rollouts")
    proximity: int = option(2, "receiver heads: ignore attention from the next N sentences")
    top_heads: int = option(16, "receiver heads kept")
    anchor_threshold: float = option(
        0.1, "anchor rule: lower CI bound of the importance (nats)", flag="--threshold"
    )
    attention: bool = option(True, "the attention and suppression views (--no-attention skips)")
    resample: bool = option(
        True,
        "the rollouts (--no-resampling: forced-answer, receiver and suppression views only)",
        flag="--no-resampling",
    )
    elicited: str = option(
        "sampled",
        "a rollout without an answer line counts as the option drawn after 'Answer:' "
        "(sampled, as in the paper) or as the distribution it is drawn from (expected)",
        choices=("sampled", "expected"),
    )
    n_planted: int = option(30, "planted traces (--data planted)", flag="--planted")
    n_controls: int = option(10, "control traces (--data planted)", flag="--controls")
    n_sentences: int = option(5, "sentences per planted trace", flag="--sentences")
    n_problems: int = option(10, "questions (--data comparison|addition)", flag="--problems")
    limit: int | None = option(None, "only the first N rows of a data file")
    seed: int = option(0, "seed of the rollouts, the planted traces and the bootstrap")
    batch: int = option(32, "rollouts decoded together")
    from_end: bool = option(
        False,
        "work through the traces last first: a second process on the same --out meets the "
        "first in the middle (each skips the traces the other has finished)",
    )

    def __post_init__(self) -> None:
        if self.rollouts < 2:
            raise SafelabError(f"--rollouts {self.rollouts}: use at least 2 rollouts per prefix")
        if not 0 < self.similarity <= 1:
            raise SafelabError(f"similarity {self.similarity}: give a cosine in (0, 1]")
        if self.prompt is None and not self.data:
            raise SafelabError("nothing to analyse: give a prompt or --data")
        if self.elicited not in ("sampled", "expected"):
            raise SafelabError(f"--elicited {self.elicited}: use sampled or expected")
        if self.prompt is not None and not self.prompt.strip():
            raise SafelabError("empty prompt: give a question for the model to reason about")

    def settings(self) -> AnalysisSettings:
        return AnalysisSettings(
            rollouts=self.rollouts,
            rollout=RolloutSettings(self.temperature, self.top_p, self.max_new_tokens, self.seed),
            similarity=self.similarity,
            alpha=self.alpha,
            n_boot=self.n_boot,
            proximity=self.proximity,
            top_heads=self.top_heads,
            anchor_threshold=self.anchor_threshold,
            attention=self.attention,
            batch=self.batch,
            resample=self.resample,
            elicited=self.elicited,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class AnchorsResult:
    out: Path
    metrics: dict[str, Any]
    traces: list[dict[str, Any]] = field(default_factory=list)

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.json"

    @property
    def report_path(self) -> Path:
        return self.out / "report.html"


def load_traces(
    cfg: AnchorsConfig, model: WhiteBoxModel, accuracy: dict[str, int] | None = None
) -> tuple[list[Trace], list[dict[str, Any]]]:
    """The traces to analyse and the questions for which the model wrote no usable trace.

    For questions with a known answer, ``accuracy`` (if given) counts the model's samples:
    ``correct``, ``wrong`` and ``unscorable`` (no answer line).
    """
    from safelab.anchors.answers import extract_answer
    from safelab.anchors.planted import planted_traces
    from safelab.anchors.problems import PROBLEM_KINDS, problems, write_trace

    if cfg.prompt is not None:
        rows: list[dict[str, Any]] = [{"id": "prompt", "question": cfg.prompt}]
    elif cfg.data == "planted":
        return planted_traces(cfg.n_planted, cfg.n_controls, cfg.n_sentences, cfg.seed), []
    elif cfg.data == "agentic":
        from safelab.anchors.agentic import agentic_trace

        return [agentic_trace()], []
    elif cfg.data in PROBLEM_KINDS:
        rows = problems(cfg.data, cfg.n_problems, cfg.seed)
    else:
        rows = read_rows(str(cfg.data))
    if cfg.limit is not None:
        rows = rows[: cfg.limit]
    traces: list[Trace] = []
    skipped: list[dict[str, Any]] = []
    for i, row in enumerate(rows):
        if row.get("reasoning"):
            traces.append(Trace.from_dict(row, where=f"{cfg.data}:{i + 1}"))
            continue
        tr, samples = write_trace(
            model, row, temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed + i
        )
        if accuracy is not None and row.get("correct") is not None:
            for text in samples:
                got = extract_answer(text, tuple(str(o) for o in row.get("options") or ()))
                key = (
                    "unscorable"
                    if got is None
                    else ("correct" if got == str(row["correct"]) else "wrong")
                )
                accuracy[key] = accuracy.get(key, 0) + 1
        if tr is None:
            skipped.append(
                {
                    "id": row.get("id", str(i)),
                    "reason": "no sample had an answer line after two or more sentences",
                    "samples": samples,
                }
            )
        else:
            traces.append(tr)
    if cfg.prompt is not None and not traces:
        raise SafelabError(
            f"prompt {cfg.prompt[:40]!r}: the model wrote no trace with two or more sentences "
            "before an 'Answer:' line in 4 samples: give the trace yourself in a .jsonl row"
        )
    return traces, skipped


def _trace_key(cfg: AnchorsConfig, trace: Trace) -> str:
    keep = {
        k: v
        for k, v in cfg.to_dict().items()
        if k not in ("limit", "n_planted", "n_controls", "n_problems", "from_end")
    }
    blob = json.dumps([keep, trace.to_dict()], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_anchors(
    cfg: AnchorsConfig,
    out: str | Path,
    model: WhiteBoxModel | None = None,
    progress: bool = True,
) -> AnchorsResult:
    """Analyse every trace of ``cfg`` (resumable) and write ``metrics.json`` and ``report.html``."""
    from safelab.anchors.embed import embedder_quality, make_embedder
    from safelab.anchors.report import write_report

    out = Path(out)
    if model is None:
        from safelab.models.loading import load_model

        model = load_model(cfg.model, dtype="float32")
    counts: dict[str, int] = {}
    traces, skipped = load_traces(cfg, model, counts)
    if not traces:
        raise SafelabError(
            f"{cfg.data}: no traces to analyse ({len(skipped)} questions gave no usable trace)"
        )
    for t in traces:
        t.check()
        check_fits(model, t, cfg.max_new_tokens)
    embedder_name, embed = make_embedder(cfg.embedder, model)
    settings = cfg.settings()
    t0 = time.time()
    order = list(enumerate(traces))
    if cfg.from_end:
        order.reverse()
    by_index: dict[int, dict[str, Any]] = {}
    for n, trace in order:
        path = out / "traces" / f"{trace.id}.json"
        key = _trace_key(cfg, trace)
        if path.is_file() and json.loads(path.read_text()).get("key") == key:
            by_index[n] = json.loads(path.read_text())["result"]
            continue
        res = analyse_trace(model, trace, settings, embed, out / "rollouts", seed=cfg.seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps({"key": key, "result": res}))
        by_index[n] = res
        if progress:
            print(
                f"[{n + 1}/{len(traces)}] {trace.id}: {len(res['sentences'])} sentences, "
                f"{time.time() - t0:.0f}s",
                flush=True,
            )
    results = [by_index[n] for n in sorted(by_index)]
    from importlib import resources

    pairs = [
        json.loads(line)
        for line in resources.files("safelab.anchors")
        .joinpath("data/pairs.jsonl")
        .read_text()
        .splitlines()
        if line.strip()
    ]
    metrics = {
        "config": cfg.to_dict(),
        "model": model.name,
        "embedder": embedder_name,
        "embedder_quality": embedder_quality(embed, pairs),
        "anchor_rule": f"resampling importance 95% bootstrap lower bound >= {cfg.anchor_threshold} nats",
        "summary": summarise(results, cfg),
        "skipped": skipped,
        "model_accuracy": _accuracy(counts, cfg.seed),
        "traces": results,
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    write_report(metrics, out / "report.html")
    return AnchorsResult(out, metrics, results)


def report_only(cfg: AnchorsConfig, out: str | Path) -> AnchorsResult:
    """Summarise the traces finished so far in ``out`` (no model) into metrics.json + report."""
    from safelab.anchors.report import write_report

    out = Path(out)
    files = sorted((out / "traces").glob("*.json"))
    if not files:
        raise SafelabError(f"{out}: no finished traces: run `safelab anchors` first")
    results = [json.loads(f.read_text())["result"] for f in files]
    if cfg.elicited == "expected":
        results = [expected_resampling(r, out / "rollouts", cfg) for r in results]
    old = json.loads((out / "metrics.json").read_text()) if (out / "metrics.json").is_file() else {}
    metrics = {
        "config": cfg.to_dict(),
        "model": old.get("model", cfg.model),
        "embedder": old.get("embedder", cfg.embedder),
        "embedder_quality": old.get("embedder_quality"),
        "anchor_rule": f"resampling importance 95% bootstrap lower bound >= {cfg.anchor_threshold} nats",
        "summary": summarise(results, cfg),
        "skipped": old.get("skipped", []),
        "model_accuracy": old.get("model_accuracy"),
        "partial": True,
        "traces": results,
    }
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1))
    write_report(metrics, out / "report.html")
    return AnchorsResult(out, metrics, results)


def expected_resampling(r: dict[str, Any], cache: Path, cfg: AnchorsConfig) -> dict[str, Any]:
    """A finished trace's resampling importance recomputed from its cached rollouts with every
    elicited answer counted as the distribution it was drawn from (``elicited="expected"``).

    No model is needed; the other methods are kept as they were computed (counterfactual
    importance still counts elicited answers as drawn: its similarity filter is not stored).
    """
    from safelab.anchors import importance as imp
    from safelab.anchors.analyse import anchors
    from safelab.anchors.rollouts import _slug

    code = {c: i for i, c in enumerate(r["categories"])}
    weights = []
    for k in range(len(r["sentences"]) + 1):
        path = cache / _slug(r["id"]) / f"{k}.json"
        if not path.is_file():
            raise SafelabError(f"{path}: rollouts missing: rerun `safelab anchors` on this folder")
        rows = []
        for ro in json.loads(path.read_text())["rollouts"][: cfg.rollouts]:
            if ro["answer"] is None:
                continue
            w = np.zeros(len(code))
            probs = ro.get("probs") if ro.get("elicited") else None
            for c, p in (probs or {ro["answer"]: 1.0}).items():
                w[code[c]] = p
            rows.append(w)
        weights.append(np.array(rows).reshape(len(rows), len(code)))
    entries = []
    for i in range(len(r["sentences"])):
        lo, hi = imp.bootstrap_kl_weights(
            weights[i + 1], weights[i], cfg.alpha, cfg.n_boot, cfg.seed * 1000 + i
        )
        v = imp.kl_weights(weights[i + 1], weights[i], cfg.alpha)
        entries.append(
            {k: (None if math.isnan(x) else x) for k, x in (("value", v), ("lo", lo), ("hi", hi))}
        )
    out = {**r, "resampling": entries, "elicited": "expected"}
    out["ranks"] = {
        **r["ranks"],
        "resampling": imp.ranks(
            [float("nan") if e["value"] is None else e["value"] for e in entries]
        ),
    }
    out["anchors_by_method"] = {
        **r["anchors_by_method"],
        "resampling": anchors(entries, "resampling", cfg.anchor_threshold),
    }
    out["anchors"] = out["anchors_by_method"]["resampling"]
    return out


def _accuracy(counts: dict[str, int], seed: int) -> dict[str, Any] | None:
    """The model's accuracy over every sample it wrote for questions with a known answer."""
    from safelab.stats import wilson_interval

    n = sum(counts.values())
    if not n:
        return None
    k = counts.get("correct", 0)
    return {
        **counts,
        "samples": n,
        "accuracy": k / n,
        "ci": list(wilson_interval(k, n)),
        "seed": seed,
    }


def _spearman(a: list[float | None], b: list[float | None]) -> float | None:
    from scipy.stats import spearmanr

    pairs = [(x, y) for x, y in zip(a, b, strict=True) if x is not None and y is not None]
    if len(pairs) < 3:
        return None
    x, y = zip(*pairs, strict=True)
    if len(set(x)) < 2 or len(set(y)) < 2:
        return None
    r = float(spearmanr(x, y).statistic)
    return None if math.isnan(r) else r


def _flags(r: dict[str, Any], method: str) -> list[int]:
    from safelab.anchors.analyse import anchors

    by = r.get("anchors_by_method")
    return list(by[method]) if by and method in by else anchors(r[method], method, 0.1)


def summarise(results: list[dict[str, Any]], cfg: AnchorsConfig) -> dict[str, Any]:
    """Planted ranks, false anchors on controls, agreement between methods, unscorable."""
    from safelab.stats import bootstrap, wilson_interval

    def rate(k: int, n: int) -> dict[str, Any]:
        lo, hi = wilson_interval(k, n) if n else (None, None)
        return {"k": k, "n": n, "rate": k / n if n else None, "ci": [lo, hi]}

    methods = [m for m in METHODS if results and all(m in r for r in results)]
    planted = [r for r in results if r["planted"] is not None]
    controls = [r for r in results if r["kind"] == "control"]
    summary: dict[str, Any] = {"n_traces": len(results), "seed": cfg.seed}
    if planted:
        per: dict[str, Any] = {}
        for m in methods:
            rk = [r["ranks"][m][r["planted"]] for r in planted]
            mean = bootstrap(rk, lambda xs: float(np.mean(xs)), seed=cfg.seed)
            per[m] = {
                "mean_rank": mean.value,
                "mean_rank_ci": [mean.ci_low, mean.ci_high],
                "top1": rate(sum(x == 1 for x in rk), len(rk)),
                "ranks": rk,
            }
        n_sent = [len(r["sentences"]) for r in planted]
        summary["planted"] = {
            "n": len(planted),
            "chance_mean_rank": float(np.mean([(k + 1) / 2 for k in n_sent])),
            "chance_top1": float(np.mean([1 / k for k in n_sent])),
            "by_method": per,
            "planted_flagged": {
                m: rate(sum(r["planted"] in _flags(r, m) for r in planted), len(planted))
                for m in methods
            },
            "other_flagged_per_trace": float(
                np.mean([len([a for a in r["anchors"] if a != r["planted"]]) for r in planted])
            ),
        }
    if controls:
        summary["controls"] = {
            "n": len(controls),
            "false_anchor_rate": rate(sum(bool(r["anchors"]) for r in controls), len(controls)),
            "false_anchor_rate_by_method": {
                m: rate(sum(bool(_flags(r, m)) for r in controls), len(controls)) for m in methods
            },
            "false_anchor_sentence_rate": rate(
                sum(len(r["anchors"]) for r in controls), sum(len(r["sentences"]) for r in controls)
            ),
        }
    agreement: dict[str, Any] = {}
    for i, a in enumerate(methods):
        for b in methods[i + 1 :]:
            rs = [
                x
                for r in results
                if (x := _spearman([e["value"] for e in r[a]], [e["value"] for e in r[b]]))
                is not None
            ]
            est = bootstrap(rs, lambda xs: float(np.mean(xs)), seed=cfg.seed)
            agreement[f"{a}~{b}"] = {
                "mean_spearman": est.value,
                "ci": [est.ci_low, est.ci_high],
                "n_traces": len(rs),
            }
    summary["agreement"] = agreement
    total = sum(p["rollouts"] for r in results for p in r["prefixes"])
    unscorable = sum(p["unscorable"] for r in results for p in r["prefixes"])
    summary["rollouts"] = {
        "total": total,
        "unscorable": unscorable,
        "unscorable_rate": unscorable / total if total else None,
    }
    correct = [r for r in results if r.get("correct") is not None]
    if correct:
        summary["trace_correct"] = rate(
            sum(r["answer"] == r["correct"] for r in correct), len(correct)
        )
    return summary
