"""The hallucination-probe experiment: config -> run -> result.

``run_hallucination(cfg, out)`` asks the model about entities of closed-world fact tables,
labels each stated attribute supported/fabricated at its token span, trains a token-level
linear probe on a split grouped by entity, and scores probe, baselines (log-probability,
entropy, sampling consistency) and a shuffled-label control on held-out spans; then trains on
each table and tests on each other one. Writes ``<out>/metrics.json``, ``<out>/spans.jsonl``,
``<out>/probe/`` (usable as ``-M probe=``) and ``<out>/view.html``. Generations and features
are cached under ``<out>`` (see :mod:`safelab.hallucination.collect`): a rerun or a resumed run
regenerates nothing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from safelab.errors import SafelabError
from safelab.files import atomic_write_text
from safelab.hallucination import evaluate as ev
from safelab.hallucination.collect import Answer, TokenFeatures, generate_answers, token_features
from safelab.hallucination.tables import DEFAULT_DATA_DIR, FactTable, load_table

if TYPE_CHECKING:
    from safelab.interp.probes import LinearProbe
    from safelab.models.whitebox import WhiteBoxModel

DEFAULT_SITES = (
    "blocks.6.resid_post",
    "blocks.12.resid_post",
    "blocks.15.resid_post",
    "blocks.18.resid_post",
    "blocks.24.resid_post",
)


@dataclass(frozen=True)
class HallucinationConfig:
    """Everything that defines a run; saved as ``config`` in metrics.json."""

    tables: tuple[str, ...] = ("cities", "element_symb")
    data_dir: str = DEFAULT_DATA_DIR
    model: str = "default"
    n_per_table: int | None = 100
    """Entities asked per table (a seeded sample; None = every entity with a true row)."""
    max_new_tokens: int = 16
    n_samples: int = 3
    """Sampled answers per entity for the consistency baseline (0 = none)."""
    temperature: float = 1.0
    sites: tuple[str, ...] = DEFAULT_SITES
    probe: str | None = None
    """A saved probe to evaluate on every span instead of training one."""
    test_frac: float = 0.25
    c: float = 1.0
    fpr: float = 0.1
    seed: int = 0
    n_resamples: int = 1000
    batch_size: int = 32
    device: str | None = None
    """cpu (default), cuda, ..."""

    def __post_init__(self) -> None:
        if not self.tables:
            raise SafelabError("no tables: give --tables (e.g. cities,element_symb)")
        if self.n_per_table is not None and self.n_per_table < 1:
            raise SafelabError(f"--n {self.n_per_table}: give a positive number of entities")
        if self.n_samples < 0:
            raise SafelabError(f"--samples {self.n_samples}: give 0 or more")
        if not 0 < self.fpr < 1:
            raise SafelabError(f"--fpr {self.fpr}: give a rate between 0 and 1")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class HallucinationResult:
    """What a run measured; ``metrics`` is what metrics.json holds."""

    metrics: dict[str, Any]
    out: Path
    answers: list[Answer]
    spans: list[ev.Span]
    generated: int = 0
    reused: int = 0
    flags: list[dict[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        """The measured table as printed lines."""
        m = self.metrics
        lines = [
            f"{len(self.answers)} answers, {m['n_spans']} labelled spans "
            f"({m['n_fabricated']} fabricated), {sum(m['excluded'].values())} excluded; "
            f"seed {m['config']['seed']}",
        ]
        main = m.get("main")
        if main:
            lines.append(
                f"{main['split']['n_test_spans']} spans scored held out "
                f"({main['split']['how'].split(' (')[0]}), probe at {main['site']}:"
            )
            rows = {"probe": main["probe"], **main["baselines"]}
            if main.get("shuffled_control"):
                rows["shuffled_control"] = main["shuffled_control"]
            for name, r in rows.items():
                lines.append(
                    f"  {name:<18} AUROC {r['auroc']:.3f} [{r['auroc_ci'][0]:.3f}, "
                    f"{r['auroc_ci'][1]:.3f}]  recall@{int(m['config']['fpr'] * 100)}%FPR "
                    f"{r['recall_at_fpr']:.3f} [{r['recall_at_fpr_ci'][0]:.3f}, "
                    f"{r['recall_at_fpr_ci'][1]:.3f}]"
                )
        for t in m.get("transfer", []):
            lines.append(
                f"  transfer {t['train']} -> {t['test']}: AUROC {t['probe']['auroc']:.3f} "
                f"[{t['probe']['auroc_ci'][0]:.3f}, {t['probe']['auroc_ci'][1]:.3f}]"
            )
        for f in self.flags:
            lines.append(f"WARNING: {f['message']}")
        return "\n".join(lines)


def sample_entities(table: FactTable, n: int | None, seed: int) -> list[str]:
    """``n`` entities in a seeded order; a smaller ``n`` is a prefix of a larger one (so a
    bigger run reuses the cached answers of a smaller one)."""
    entities = table.entities
    order = np.random.default_rng(seed).permutation(len(entities))
    return [entities[i] for i in order[: len(entities) if n is None else n]]


def check_probe_fits(probe: LinearProbe, model: WhiteBoxModel, where: str) -> None:
    """A probe trained on another model's width is a one-line error naming both widths."""
    if probe.cfg.d_model != model.d_model:
        raise SafelabError(
            f"{where}: the probe is {probe.cfg.d_model} wide (trained on "
            f"{probe.cfg.model or 'another model'}), {model.name} has d_model {model.d_model}: "
            "give a probe trained on this model"
        )
    model.resolve_sites(probe.site)


def run_hallucination(
    cfg: HallucinationConfig,
    out: str | Path,
    *,
    model: WhiteBoxModel | None = None,
    log: Callable[[str], None] = print,
) -> HallucinationResult:
    """Run (or resume) the experiment; see the module docstring."""
    from safelab.interp.probes import LinearProbe

    out = Path(out)
    t0 = time.perf_counter()
    tables = {name: load_table(name, cfg.data_dir) for name in cfg.tables}
    given = LinearProbe.load(cfg.probe) if cfg.probe else None
    if model is None:
        from safelab.models.loading import load_model

        model = load_model(cfg.model, dtype="float32", device=cfg.device)
    if given is not None:
        check_probe_fits(given, model, f"--probe {cfg.probe}")
    sites = (
        [given.site]
        if given is not None
        else [str(s) for s in model.resolve_sites(list(cfg.sites))]
    )
    answers: list[Answer] = []
    parts: list[TokenFeatures] = []
    generated = 0
    for name, table in tables.items():
        entities = sample_entities(table, cfg.n_per_table, cfg.seed)
        log(f"{name}: {len(entities)} entities")
        got, new = generate_answers(
            model,
            table,
            entities,
            out / "generations" / f"{name}.jsonl",
            max_new_tokens=cfg.max_new_tokens,
            n_samples=cfg.n_samples,
            temperature=cfg.temperature,
            seed=cfg.seed,
            batch_size=cfg.batch_size,
            log=log,
        )
        generated += new
        feats = token_features(
            model, got, sites, out / "features" / f"{name}.safetensors", batch_size=cfg.batch_size
        )
        feats.answer = feats.answer + len(answers)
        answers.extend(got)
        parts.append(feats)
    feats = _concat(parts, sites)
    spans, excluded = ev.label_spans(answers, tables, model.tokenizer)
    labels = np.array([s.label for s in spans], dtype=int)
    metrics: dict[str, Any] = {
        "config": cfg.to_dict(),
        "model": model.name,
        "d_model": model.d_model,
        "n_answers": len(answers),
        "n_spans": len(spans),
        "n_fabricated": int(labels.sum()),
        "excluded": dict(sorted(excluded.items())),
        "by_table": _by_table(answers, spans, excluded),
        "sites": sites,
    }
    base = ev.baseline_scores(feats, spans) if spans else {}
    flags: list[dict[str, str]] = []
    probe: LinearProbe | None = given
    if len(set(labels.tolist())) < 2:
        flags.append(
            {
                "flag": "one_label",
                "message": f"all {len(spans)} labelled spans have one label: nothing to detect "
                "(ask about more entities or other tables)",
            }
        )
    elif given is not None:
        metrics["main"] = _evaluate_given(given, feats, spans, labels, base, cfg)
        flags += metrics["main"]["flags"]
    else:
        metrics["main"], probe = _train_and_test(feats, spans, labels, base, sites, cfg, model)
        flags += metrics["main"]["flags"]
        metrics["transfer"] = _transfer(feats, spans, labels, base, metrics["main"]["site"], cfg)
    for k, s in enumerate(spans):
        s.scores = {name: round(float(v[k]), 5) for name, v in base.items()}
        if probe is not None:
            s.scores["probe"] = round(float(ev.probe_span_scores(probe, feats, [s])[0]), 5)
    metrics["flags"] = flags
    metrics["wall_s"] = round(time.perf_counter() - t0, 1)
    metrics["generated"] = generated
    out.mkdir(parents=True, exist_ok=True)
    if probe is not None and given is None:
        probe.save(out / "probe")
    atomic_write_text(out / "spans.jsonl", "".join(json.dumps(s.to_dict()) + "\n" for s in spans))
    from safelab.hallucination.view import write_view

    write_view(out / "view.html", answers, spans, feats, probe, model.tokenizer, metrics)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return HallucinationResult(
        metrics, out, answers, spans, generated, len(answers) - generated, flags
    )


def _concat(parts: list[TokenFeatures], sites: list[str]) -> TokenFeatures:
    import torch

    return TokenFeatures(
        {s: torch.cat([p.acts[s] for p in parts]) for s in sites},
        torch.cat([p.answer for p in parts]),
        torch.cat([p.position for p in parts]),
        torch.cat([p.logprob for p in parts]),
        torch.cat([p.entropy for p in parts]),
    )


def _by_table(
    answers: list[Answer], spans: list[ev.Span], excluded: Counter[str]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in dict.fromkeys(a.table for a in answers):
        mine = [s for s in spans if s.table == name]
        out[name] = {
            "answers": sum(1 for a in answers if a.table == name),
            "spans": len(mine),
            "fabricated": sum(s.label for s in mine),
            "excluded": sum(v for k, v in excluded.items() if k.startswith(f"{name}:")),
        }
    return out


def _metrics(scores: np.ndarray, labels: np.ndarray, cfg: HallucinationConfig) -> dict[str, Any]:
    return ev.span_metrics(scores, labels, fpr=cfg.fpr, n_resamples=cfg.n_resamples, seed=cfg.seed)


def _groups(spans: list[ev.Span]) -> np.ndarray:
    return np.unique([f"{s.table}:{s.entity}" for s in spans], return_inverse=True)[1]


def _split(spans: list[ev.Span], labels: np.ndarray, frac: float, seed: int) -> tuple[Any, Any]:
    from safelab.interp.splits import grouped_split

    return grouped_split(labels, _groups(spans), frac, seed)


def _folds(
    spans: list[ev.Span], labels: np.ndarray, frac: float, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every fold of the grouped split ``interp.splits.grouped_split`` takes one of.

    Each span is held out exactly once, so every labelled span is a test span (out-of-fold
    scores) instead of the one fold's quarter: four times the test spans at these sizes.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    from safelab.interp.splits import grouped_split

    grouped_split(labels, _groups(spans), frac, seed)  # the same checks (enough groups, labels)
    k = max(2, round(1 / frac))
    folds = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [
        (np.sort(a), np.sort(b))
        for a, b in folds.split(np.zeros(len(labels)), labels, _groups(spans))
    ]


def _choose_site(
    feats: TokenFeatures,
    spans: list[ev.Span],
    labels: np.ndarray,
    sites: list[str],
    cfg: HallucinationConfig,
) -> tuple[str, dict[str, float]]:
    """The site with the best AUROC on a grouped validation split of these (training) spans."""
    fit, val = _split(spans, labels, cfg.test_frac, cfg.seed + 1)
    val_auroc: dict[str, float] = {}
    for site in sites:
        p = ev.fit_token_probe(
            feats, [spans[i] for i in fit], labels[fit], site, c=cfg.c, seed=cfg.seed
        )
        s = ev.probe_span_scores(p, feats, [spans[i] for i in val])
        val_auroc[site] = round(float(ev.auroc(s, labels[val])), 4)
    return max(sites, key=lambda s: val_auroc[s]), val_auroc


def _train_and_test(
    feats: TokenFeatures,
    spans: list[ev.Span],
    labels: np.ndarray,
    base: dict[str, np.ndarray],
    sites: list[str],
    cfg: HallucinationConfig,
    model: WhiteBoxModel,
) -> tuple[dict[str, Any], LinearProbe]:
    from safelab.interp.controls import N_SHUFFLES, shuffled_labels

    n = len(spans)
    folds = _folds(spans, labels, cfg.test_frac, cfg.seed)
    oof = np.zeros(n)
    oof_site = {site: np.zeros(n) for site in sites}
    oof_control = np.zeros((N_SHUFFLES, n))
    chosen: list[str] = []
    validation: list[dict[str, float]] = []
    for train, test in folds:
        tr = [spans[i] for i in train]
        te = [spans[i] for i in test]
        # the site is chosen on a validation split inside the fold's training spans
        site, val = _choose_site(feats, tr, labels[train], sites, cfg)
        chosen.append(site)
        validation.append(val)
        for other in sites:
            p = ev.fit_token_probe(feats, tr, labels[train], other, c=cfg.c, seed=cfg.seed)
            oof_site[other][test] = ev.probe_span_scores(p, feats, te)
        oof[test] = oof_site[site][test]
        # shuffled-label control: the same fit on span labels shuffled within class shares
        for k in range(N_SHUFFLES):
            fake = shuffled_labels(labels[train], cfg.seed + 1000 * k)
            p = ev.fit_token_probe(feats, tr, fake, site, c=cfg.c, seed=cfg.seed)
            oof_control[k, test] = ev.probe_span_scores(p, feats, te)
    probe_m = _metrics(oof, labels, cfg)
    baselines = {name: _metrics(v, labels, cfg) for name, v in base.items()}
    draws = [_metrics(oof_control[k], labels, cfg) for k in range(N_SHUFFLES)]
    control = {
        "auroc": round(float(np.mean([d["auroc"] for d in draws])), 4),
        "auroc_ci": [min(d["auroc_ci"][0] for d in draws), max(d["auroc_ci"][1] for d in draws)],
        "recall_at_fpr": round(float(np.mean([d["recall_at_fpr"] for d in draws])), 4),
        "recall_at_fpr_ci": [
            min(d["recall_at_fpr_ci"][0] for d in draws),
            max(d["recall_at_fpr_ci"][1] for d in draws),
        ],
        "n_draws": N_SHUFFLES,
    }
    by_table = {}
    for name in dict.fromkeys(s.table for s in spans):
        idx = np.array([k for k, s in enumerate(spans) if s.table == name])
        if len(set(labels[idx].tolist())) == 2:
            by_table[name] = {
                "probe": _metrics(oof[idx], labels[idx], cfg),
                **{b: _metrics(v[idx], labels[idx], cfg) for b, v in base.items()},
            }
    # the saved probe: every span, at the site the folds chose most often
    site = max(dict.fromkeys(chosen), key=chosen.count)
    probe = ev.fit_token_probe(
        feats,
        spans,
        labels,
        site,
        c=cfg.c,
        seed=cfg.seed,
        model=model.name,
        data=",".join(cfg.tables),
    )
    flags = ev.no_better_flags(probe_m, {**baselines, "shuffled_control": control})
    main = {
        "site": site,
        "sites_chosen": chosen,
        "site_chosen_by": "AUROC on a grouped validation split inside each fold's training spans",
        "validation_auroc": validation,
        "test_auroc_by_site": {
            other: round(float(ev.auroc(v, labels)), 4) for other, v in oof_site.items()
        },
        "split": {
            "how": f"{len(folds)}-fold grouped cross-validation by table:entity (the folds of "
            "interp.splits.grouped_split); every span scored out of fold",
            "n_folds": len(folds),
            "n_test_spans": n,
            "n_test_fabricated": int(labels.sum()),
            "n_tokens": int(sum(len(s.tokens) for s in spans)),
            "seed": cfg.seed,
        },
        "probe": probe_m,
        "baselines": baselines,
        "shuffled_control": control,
        "by_table": by_table,
        "flags": flags,
        "overlap_rule": "the probe is flagged no better than X when its AUROC interval's lower "
        "bound is at or below X's AUROC",
    }
    return main, probe


def _evaluate_given(
    probe: LinearProbe,
    feats: TokenFeatures,
    spans: list[ev.Span],
    labels: np.ndarray,
    base: dict[str, np.ndarray],
    cfg: HallucinationConfig,
) -> dict[str, Any]:
    probe_m = _metrics(ev.probe_span_scores(probe, feats, spans), labels, cfg)
    baselines = {name: _metrics(v, labels, cfg) for name, v in base.items()}
    return {
        "site": probe.site,
        "probe_path": cfg.probe,
        "split": {"how": "every span is a test span (a given probe)", "n_test_spans": len(spans)},
        "probe": probe_m,
        "baselines": baselines,
        "flags": ev.no_better_flags(probe_m, baselines),
    }


def _transfer(
    feats: TokenFeatures,
    spans: list[ev.Span],
    labels: np.ndarray,
    base: dict[str, np.ndarray],
    site: str,
    cfg: HallucinationConfig,
) -> list[dict[str, Any]]:
    names = [
        n
        for n in dict.fromkeys(s.table for s in spans)
        if len({int(labels[k]) for k, s in enumerate(spans) if s.table == n}) == 2
    ]
    out = []
    for a in names:
        ia = np.array([k for k, s in enumerate(spans) if s.table == a])
        probe = ev.fit_token_probe(
            feats, [spans[k] for k in ia], labels[ia], site, c=cfg.c, seed=cfg.seed
        )
        for b in names:
            if a == b:
                continue
            ib = np.array([k for k, s in enumerate(spans) if s.table == b])
            scores = ev.probe_span_scores(probe, feats, [spans[k] for k in ib])
            m = _metrics(scores, labels[ib], cfg)
            bases = {n: _metrics(v[ib], labels[ib], cfg) for n, v in base.items()}
            out.append(
                {
                    "train": a,
                    "test": b,
                    "site": site,
                    "probe": m,
                    "baselines": bases,
                    "flags": [f["flag"] for f in ev.no_better_flags(m, bases)],
                }
            )
    return out
