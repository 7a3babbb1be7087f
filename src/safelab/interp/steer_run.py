"""The steering sweep as an experiment: ``SteerSweepConfig`` -> :func:`run_steer_sweep` -> result.

Every layer's activation at the answer token is captured once (cached); one vector per swept
site is made from the training pairs; ``Δp(matching answer)`` is measured on held-out pairs for
each (site, scale), and, with ``mmlu``, the multiple-choice accuracy cost at the best site. The
result owns ``metrics.json`` (with the config), the vectors, the plot and the report::

    from safelab.interp.steer_run import SteerSweepConfig, run_steer_sweep
    res = run_steer_sweep(SteerSweepConfig(data="pairs.json"), "runs/steer")
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safelab.config import comma_numbers, config_dict, option
from safelab.errors import SafelabError
from safelab.files import atomic_write_text
from safelab.interp.probe_sweep import ContrastDataConfig, load_contrast_data

if TYPE_CHECKING:
    from safelab.interp.steer_sweep import SteerSweepResult
    from safelab.interp.steering import SteeringVector
    from safelab.models.whitebox import WhiteBoxModel


def parse_scales(text: str) -> list[float]:
    """``"-4,-1,1,4"`` -> ``[-4.0, -1.0, 1.0, 4.0]``."""
    return list(comma_numbers(text, "--scales"))


def default_sweep_layers(n_layers: int) -> list[int]:
    """Layers a sweep tries by default: every k-th from ``n // 10`` to ``n - 2``, ``k = max(1, n // 10)``.

    About ten layers on any depth, skipping the first and last tenth (embedding-like and
    unembedding-like layers rarely steer well): 3, 6, ..., 27 on a 30-layer model; 0, 1 on a
    3-layer one.
    """
    step = max(1, n_layers // 10)
    start = n_layers // 10
    return list(range(start, max(start, n_layers - 2) + 1, step))


def sweep_sites(requested: str | None, model: WhiteBoxModel, captured: list[str]) -> list[str]:
    """``layers_sites`` as given; '' for every captured site; by default the model's spread."""
    if requested is None:
        spread = [f"blocks.{layer}.resid_post" for layer in default_sweep_layers(model.n_layers)]
        return [s for s in spread if s in captured] or captured
    if not requested:
        return captured
    return [str(s) for s in model.resolve_sites(requested)]


@dataclass(frozen=True)
class SteerSweepConfig(ContrastDataConfig):
    """A steering vector per site from A/B pairs, scored by Δp(matching) on held-out pairs."""

    kind: str = option("pairs", "steering reads A/B pairs", choices=("pairs",))
    data: str = option(
        "", "A/B pairs: CAA .json, model-written-eval .jsonl, or prompt/positive/negative .jsonl"
    )
    test: str | None = option(None, "held-out pairs file (default: a --test-frac split of --data)")
    test_frac: float = option(0.25, "held-out fraction of the pairs (groups kept whole)")
    group: str | None = option(
        None,
        "column whose rows stay on one side of the split (default: A/B pairs are grouped)",
    )
    test_limit: int | None = option(None, "at most this many held-out pairs")
    layers_sites: str | None = option(
        None,
        "sites to sweep; '' for every captured site (default: resid_post every k-th layer "
        "from n//10 to n-2, k = max(1, n//10): blocks 3,6,...,27 of a 30-layer model)",
    )
    scales: str = option("-4,-1,1,4", "comma-separated multiples of the vector")
    mmlu: str | None = option(
        None, "multiple-choice pairs (prompt/correct/incorrect) for the capability cost"
    )
    mmlu_limit: int = option(100, "at most this many multiple-choice questions")
    method: str = option(
        "mean_diff",
        "contrastive mean difference or PCA of differences",
        choices=("mean_diff", "pca"),
    )
    positions: str = option(
        "all", "add the vector at every token or only the last", choices=("all", "last")
    )


@dataclass
class SteerSweepRun:
    """A finished steering sweep, its vectors and what ``metrics.json`` records."""

    cfg: SteerSweepConfig
    result: SteerSweepResult
    vectors: dict[str, SteeringVector]
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        payload = self.result.to_dict()
        payload.update(self.info)
        payload["config"] = config_dict(self.cfg)
        return payload

    def write(self, out: str | Path) -> Path:
        from safelab.report import plots

        out = Path(out)
        best = self.result.best()
        for site, vec in self.vectors.items():
            vec.cfg.metrics["sweep"] = {
                f"{c.scale:g}": {"delta": c.delta, "delta_ci": c.delta_ci}
                for c in self.result.cells
                if c.site == site
            }
            vec.save(out / "vectors" / site)
        best_vec = self.vectors[best.site]
        best_vec.cfg.scale = best.scale
        best_vec.save(out / "vector")
        payload = self.to_dict()
        path = atomic_write_text(out / "metrics.json", json.dumps(payload, indent=2) + "\n")
        img = plots.steering_curves(
            payload["cells"],
            out / "steering.png",
            title=f"{self.info['name']}: Δp(matching) by layer ({self.cfg.method}, {self.info['model']})",
        )
        plots.write_html(
            out / "report.html", f"steering sweep: {self.info['name']}", [img], payload
        )
        return path

    def summary_lines(self) -> list[str]:
        r, best = self.result, self.result.best()
        lines = [
            f"MMLU at {c['site']} scale {c['scale']:+g}: accuracy {c['accuracy']:.3f} -> "
            f"{c['steered_accuracy']:.3f} (Δ {c['delta_accuracy']:+.3f} "
            f"[{c['delta_accuracy_ci'][0]:+.3f}, {c['delta_accuracy_ci'][1]:+.3f}], n={c['n']})"
            for c in r.capability.get("at_best_site", [])
        ]
        lines.append(
            f"best {best.site} scale {best.scale:+g}: Δp {best.delta:+.3f} "
            f"[{best.delta_ci[0]:+.3f}, {best.delta_ci[1]:+.3f}] "
            f"(baseline p {r.baseline_p:.3f}, n={r.n_test}, seed={r.seed})"
        )
        return lines


@dataclass(frozen=True)
class SteerSiteCell:
    """One site of a steering sweep: every scale of its vector on the held-out prompts.

    Carries the model's name, the vector's folder and the (small) held-out prompts with their
    unsteered ``p(match)``; a Ray worker loads the model and the vector itself.
    """

    site: str
    model: str
    vector: str
    prompts: tuple[tuple[tuple[int, ...], int, int], ...]
    """``(ids, match_id, other_id)`` per held-out pair."""
    base: tuple[float, ...]
    """The unsteered ``p(match)`` of each prompt (the pairing of every Δp)."""
    scales: tuple[float, ...]
    positions: str = "all"
    seed: int = 0
    n_resamples: int = 1000
    batch_size: int = 16

    @property
    def key(self) -> str:
        """The site and a digest of what decides its cells (stale cells are never reused)."""
        import hashlib

        digest = hashlib.sha256(repr(self).encode()).hexdigest()[:12]
        return f"steer-{self.site}-{digest}"


def steer_site_cell(
    cell: SteerSiteCell,
    model: WhiteBoxModel | None = None,
    vector: SteeringVector | None = None,
) -> dict[str, Any]:
    """Δp(matching) at every scale of one site's vector, paired with the unsteered run."""
    from contextlib import nullcontext

    import numpy as np

    from safelab.interp.steer_sweep import ChoicePrompt, SteerCell, choice_probs
    from safelab.interp.steering import SteeringVector, resolve_steer
    from safelab.stats import mean_ci

    if model is None:
        from safelab.models.loading import load_model

        model = load_model(cell.model)
    vec = vector if vector is not None else SteeringVector.load(cell.vector)
    test = [ChoicePrompt(list(ids), m, o) for ids, m, o in cell.prompts]
    base = np.asarray(cell.base, dtype=np.float64)
    cells = []
    for scale in cell.scales:
        ctx = (
            resolve_steer(vec, scale=scale, positions=cell.positions, site=cell.site).apply(model)  # type: ignore[arg-type]
            if scale
            else nullcontext()
        )
        with ctx:
            p = choice_probs(model, test, cell.batch_size)
        d, lo, hi = mean_ci(p - base, n_resamples=cell.n_resamples, seed=cell.seed)
        cells.append(asdict(SteerCell(cell.site, float(scale), float(p.mean()), d, [lo, hi])))
    return {"cells": cells}


def run_steer_sweep(
    cfg: SteerSweepConfig,
    out: str | Path,
    *,
    ray: str | None = None,
    progress: bool = True,
) -> SteerSweepRun:
    """Split the pairs, make the vectors, sweep (site, scale), cost at the best site, write.

    Each site (every scale of its vector) is one cell of :func:`safelab.distributed.run_grid`:
    ``ray`` runs it as a Ray task (the worker loads the model by name); finished sites are kept
    in ``out/cells`` and skipped on a rerun.
    """
    import functools

    from safelab.distributed import run_grid
    from safelab.interp.actcache import cached_activations
    from safelab.interp.contrast import read_pairs
    from safelab.interp.steer_sweep import (
        SteerCell,
        SteerSweepResult,
        capability_cost,
        choice_probs,
        choice_prompts,
        contrast_vectors,
    )
    from safelab.stats import mean_ci

    if not cfg.data:
        raise SafelabError("a steering sweep needs A/B pairs: pass --data FILE")
    t_start = time.perf_counter()
    scales = parse_scales(cfg.scales)
    model, data = load_contrast_data(cfg, cfg.data)
    if data.kind != "pairs":
        raise SafelabError(f"{cfg.data}: steering needs A/B pairs (.json/.jsonl), not {data.kind}")
    pairs_all = read_pairs(data.source)
    pair_ids = sorted({e.pair for e in data.examples})
    train_rows = list(range(len(data)))
    split_info: dict[str, Any] = {"how": "test_file", "grouped": True}
    if cfg.test:
        train_data = data
        test_pairs = read_pairs(cfg.test)
        test_source = cfg.test
    else:
        from safelab.interp.splits import make_split

        train_idx, test_idx, split = make_split(
            data, test_frac=cfg.test_frac, seed=cfg.seed, group=cfg.group
        )
        split_info = split.to_dict()
        if progress:
            print(split.line())
        train_rows = train_idx.tolist()
        train_data = data.subset(train_rows)
        test_ids = sorted({data.examples[i].pair for i in test_idx})
        test_pairs = [pairs_all[i] for i in test_ids]
        test_source = (
            f"{cfg.data} (held-out {len(test_ids)} of {len(pair_ids)} pairs, seed {cfg.seed})"
        )
    if cfg.test_limit and len(test_pairs) > cfg.test_limit:
        test_pairs = test_pairs[: cfg.test_limit]
    cached = cached_activations(
        model, data, cfg.sites, cache_root=cfg.cache, batch_size=cfg.batch_size, progress=progress
    )
    acts = {s: v[train_rows] for s, v in cached.acts.items()}
    sites = sweep_sites(cfg.layers_sites, model, list(acts))
    missing = [s for s in sites if s not in acts]
    if missing:
        raise SafelabError(
            f"sweep sites {', '.join(missing)} were not captured (--sites {cfg.sites})"
        )
    vectors = contrast_vectors(
        {s: acts[s] for s in sites},
        train_data,
        method=cfg.method,  # type: ignore[arg-type]
        model_name=model.name,
        seed=cfg.seed,
    )
    for v in vectors.values():
        v.cfg.positions = cfg.positions
    test = choice_prompts(model, test_pairs, train_data.template)
    if progress:
        state = "cached" if cached.cached else f"captured in {cached.capture_s:.1f}s"
        print(
            f"{data.name}: {len(train_data) // 2} training pairs, {len(test)} held-out pairs; "
            f"{state}"
        )
    t_sweep = time.perf_counter()
    base = choice_probs(model, test, cfg.batch_size)
    b_mean, b_lo, b_hi = mean_ci(base, n_resamples=cfg.resamples, seed=cfg.seed)
    result = SteerSweepResult(b_mean, [b_lo, b_hi], len(test), cfg.seed, cfg.positions)
    out = Path(out)
    cells = []
    for site, vec in vectors.items():
        vec.save(out / "vectors" / site)  # what a worker loads; rewritten with its sweep after
        cells.append(
            SteerSiteCell(
                site=site,
                model=cfg.model,
                vector=str(out / "vectors" / site),
                prompts=tuple((tuple(t.ids), t.match_id, t.other_id) for t in test),
                base=tuple(float(b) for b in base),
                scales=tuple(scales),
                positions=cfg.positions,
                seed=cfg.seed,
                n_resamples=cfg.resamples,
                batch_size=cfg.batch_size,
            )
        )
    if ray is None:
        fn: Any = functools.partial(_here, model=model, vectors=vectors)
    else:
        fn = steer_site_cell
    rows = run_grid(fn, cells, out, ray=ray, progress=progress, desc="steer sites")
    for row in rows:
        for c in row["cells"]:
            result.cells.append(SteerCell(**c))
            if progress:
                print(
                    f"{c['site']:>24}  scale {c['scale']:+g}  p(match) {c['p_match']:.3f}  "
                    f"Δp {c['delta']:+.3f} [{c['delta_ci'][0]:+.3f}, {c['delta_ci'][1]:+.3f}]",
                    flush=True,
                )
    sweep_s = time.perf_counter() - t_sweep
    best = result.best()
    if cfg.mmlu:
        mc = choice_prompts(model, read_pairs(cfg.mmlu)[: cfg.mmlu_limit], "chat")
        result.capability = {
            "data": cfg.mmlu,
            "at_best_site": [
                capability_cost(
                    model,
                    vectors[best.site],
                    s,
                    mc,
                    positions=cfg.positions,  # type: ignore[arg-type]
                    seed=cfg.seed,
                    n_resamples=cfg.resamples,
                    batch_size=cfg.batch_size,
                )
                for s in scales
                if s != 0
            ],
        }
    info = {
        "model": model.name,
        "name": data.name,
        "data": data.source,
        "data_hash": data.data_hash,
        "test": test_source,
        "method": cfg.method,
        "scales": scales,
        "n_train_pairs": len(train_data) // 2,
        "split": split_info,
        "norms": {
            s: {
                "vector": float(v.vector.norm()),
                "mean_activation": float(acts[s].norm(dim=1).mean()),
            }
            for s, v in vectors.items()
        },
        "timing": {
            "capture_s": round(cached.capture_s, 2),
            "cached": cached.cached,
            "sweep_s": round(sweep_s, 2),
            "total_s": round(time.perf_counter() - t_start, 2),
        },
    }
    run = SteerSweepRun(cfg, result, vectors, info)
    run.write(out)
    return run


def _here(
    cell: SteerSiteCell, *, model: WhiteBoxModel, vectors: dict[str, SteeringVector]
) -> dict[str, Any]:
    """A site's cell in this process, on the model and vectors already in memory."""
    return steer_site_cell(cell, model, vectors[cell.site])
