"""The probe sweep as an experiment: ``ProbeSweepConfig`` -> :func:`run_probe_sweep` -> result.

``safelab probe sweep`` / ``probe train`` and a notebook run the same function with the same
config and get the same numbers::

    from safelab.interp.probe_sweep import ProbeSweepConfig, run_probe_sweep
    res = run_probe_sweep(ProbeSweepConfig(data="cities.csv", group="city"), "runs/probe")
    res.sweep.sites[res.sweep.best_site].auroc

The data's activations are captured once into the activation cache (here); each site is then
one cell of :mod:`safelab.distributed` (fitted here or as a Ray task that reads its rows from
the cache store), written to ``<out>/cells/`` as it finishes, so an interrupted sweep resumes
with the sites it has. The result owns ``metrics.json`` (with the config), the probes, the plots
and the report.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from safelab.config import config_dict, option
from safelab.distributed import run_grid
from safelab.files import atomic_write_text
from safelab.interp.sweep import (
    GeneralisationMatrix,
    ProbeCell,
    SiteFit,
    SiteResult,
    SweepResult,
    assemble_sweep,
    print_site,
    probe_cell,
)
from safelab.stats import DEFAULT_RESAMPLES

if TYPE_CHECKING:
    from safelab.interp.contrast import ContrastSet
    from safelab.models.whitebox import WhiteBoxModel


def names_list(text: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; None for none."""
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


@dataclass(frozen=True)
class ContrastDataConfig:
    """How contrast data is read and its activations captured (shared by probe experiments)."""

    kind: str = option(
        "auto",
        "how to read the file (auto: .csv statements, .json/.jsonl pairs)",
        choices=("auto", "statements", "replies", "pairs"),
    )
    template: str | None = option(
        None,
        "raw text or the chat template (default: raw for statements, chat for replies and pairs)",
        choices=("raw", "chat"),
    )
    position: str | None = option(
        None, "read position: last, mean or a token index (default: last; mean for replies)"
    )
    limit: int | None = option(None, "seeded random sample of this many rows (pairs for pair data)")
    model: str = option("default", "model to load (default: the embedded SmolLM2-135M-Instruct)")
    sites: str = option("blocks.*.resid_post", "sites to capture (glob, comma-separated)")
    cache: str | None = option(
        None, "activation cache folder (default: $SAFELAB_CACHE/activations)"
    )
    batch_size: int = option(32, "inputs per forward pass")
    seed: int = option(0, "seed for sampling, splits and bootstrap")
    resamples: int = option(DEFAULT_RESAMPLES, "bootstrap resamples for intervals")


@dataclass(frozen=True)
class ProbeSweepConfig(ContrastDataConfig):
    """A probe per site on one held-out split, with controls; ``site`` for a single probe."""

    data: str = option("", "statement,label CSV or JSONL/JSON of A/B pairs")
    site: str | None = option(None, "probe one site only (probe train), e.g. blocks.12.resid_post")
    method: str = option("logistic", "probe type", choices=("logistic", "mass_mean"))
    c: float = option(1.0, "inverse L2 strength for logistic probes")
    test_frac: float = option(0.25, "held-out fraction (stratified; groups kept whole)")
    group: str | None = option(
        None,
        "column whose rows stay on one side of the split (default: A/B pairs and detected "
        "near-duplicate statements are grouped; 'rows' for a plain row split)",
    )
    domain: str | None = option(None, "column naming each row's domain (for --test-on)")
    train_on: str | None = option(None, "domains to train on (default: all but --test-on)")
    test_on: str | None = option(None, "domains to test on, comma-separated")
    controls: bool = option(
        True, "skip the shuffled-label control and the bag-of-words / token-embedding baselines"
    )
    sae: str | None = option(
        None, "an SAE folder: add the k-sparse probe on its latents at its site (same split)"
    )
    sae_k: int = option(8, "latents in the sparse SAE probe")


@dataclass
class ProbeSweepResult:
    """A finished sweep and everything ``metrics.json`` records about it."""

    cfg: ProbeSweepConfig
    sweep: SweepResult
    model: str
    name: str
    template: str
    position: str
    activation_cache: str
    timing: dict[str, Any]
    split_line: str = ""
    sae_probe: dict[str, Any] | None = None
    cells_resumed: int = 0

    def to_dict(self) -> dict[str, Any]:
        payload = self.sweep.to_dict()
        if self.sae_probe is not None:
            payload["sae_probe"] = self.sae_probe
        payload.update(
            model=self.model,
            name=self.name,
            template=self.template,
            position=self.position,
            limit=self.cfg.limit,
            activation_cache=self.activation_cache,
            timing=self.timing,
            config=config_dict(self.cfg),
        )
        return payload

    def write(self, out: str | Path) -> Path:
        """``metrics.json``, the best probe, the ROC / AUROC-by-layer plots and ``report.html``."""
        from safelab.report import plots

        out = Path(out)
        sweep, best = self.sweep, self.sweep.best_site
        payload = self.to_dict()
        sweep.probes[best].save(out / "probe")
        r = sweep.sites[best]
        images = [
            plots.roc_curves(
                {best: (r.roc["fpr"], r.roc["tpr"], r.auroc)},
                out / "roc.png",
                title=f"{self.name}: held-out ROC at {best}",
            )
        ]
        if len(sweep.sites) > 1:
            curves = {
                f"{self.name} ({self.cfg.method})": {
                    s: (v.auroc, v.auroc_ci) for s, v in sweep.sites.items()
                }
            }
            if self.cfg.controls:
                curves["shuffled-label control"] = {
                    s: (v.control_auroc, v.control_auroc_ci)
                    for s, v in sweep.sites.items()
                    if v.control_auroc is not None and v.control_auroc_ci is not None
                }
                for name, m in sweep.baselines.items():
                    curves[f"{name.replace('_', '-')} baseline"] = {
                        s: (m["auroc"], m["auroc_ci"]) for s in sweep.sites
                    }
            images.insert(
                0,
                plots.auroc_by_layer(
                    curves,
                    out / "auroc_by_layer.png",
                    title=f"{self.name}: held-out probe AUROC by layer ({self.model})",
                ),
            )
        path = atomic_write_text(out / "metrics.json", json.dumps(payload, indent=2) + "\n")
        warnings = [f["message"] for f in sweep.flags]
        plots.write_html(
            out / "report.html", f"probe sweep: {self.name}", images, payload, warnings
        )
        return path

    def summary_lines(self) -> list[str]:
        """What the CLI prints after the sweep."""
        sweep = self.sweep
        best = sweep.best_site
        r = sweep.sites[best]
        lines = [
            f"baseline {name.replace('_', '-')}: AUROC {m['auroc']:.3f} "
            f"[{m['auroc_ci'][0]:.3f}, {m['auroc_ci'][1]:.3f}] (same split)"
            for name, m in sweep.baselines.items()
        ]
        lines += [f"WARNING: {f['message']}" for f in sweep.flags]
        flagged = [f["flag"] for f in sweep.flags if f["flag"].startswith("best_")]
        lines.append(
            f"{'FLAGGED ' if flagged else ''}best {best}: AUROC {r.auroc:.3f} "
            f"[{r.auroc_ci[0]:.3f}, {r.auroc_ci[1]:.3f}], "
            f"recall@1%FPR {r.recall_at_1pct_fpr:.3f} (n_test={sweep.n_test}, seed={sweep.seed})"
            + (f" [{', '.join(flagged)}]" if flagged else "")
        )
        if sp := self.sae_probe:
            dense = sweep.sites.get(sp["site"])
            dense_text = f"; dense probe there {dense.auroc:.3f}" if dense is not None else ""
            lines.append(
                f"sparse SAE probe at {sp['site']} (k={sp['k']} latents of {sp['sae']}): AUROC "
                f"{sp['auroc']:.3f} [{sp['auroc_ci'][0]:.3f}, {sp['auroc_ci'][1]:.3f}]{dense_text}"
            )
        lines.append(
            f"timing: capture {self.timing['capture_s']}s, fit+metrics {self.timing['fit_and_metrics_s']}s"
        )
        return lines


def load_contrast_data(cfg: ContrastDataConfig, path: str) -> tuple[WhiteBoxModel, ContrastSet]:
    """The model and the contrast data a config names."""
    from safelab.interp.contrast import check_data_file, load_contrast, parse_position
    from safelab.models.loading import load_model

    check_data_file(path)  # before the model load (seconds)
    model = load_model(cfg.model)
    data = load_contrast(
        path,
        model,
        kind=cfg.kind,  # type: ignore[arg-type]
        template=cfg.template,  # type: ignore[arg-type]
        position=parse_position(cfg.position) if cfg.position else None,
        limit=cfg.limit,
        seed=cfg.seed,
    )
    return model, data


def run_probe_sweep(
    cfg: ProbeSweepConfig,
    out: str | Path,
    *,
    ray: str | None = None,
    progress: bool = True,
) -> ProbeSweepResult:
    """Capture (or read the cache), split, fit a probe per site (here or on Ray), write it all.

    Args:
        ray: None fits here; ``"local"`` or a cluster address fits each site as a Ray task.
    """
    from safelab.errors import SafelabError
    from safelab.interp.actcache import cached_activations
    from safelab.interp.probes import LinearProbe
    from safelab.interp.splits import make_split

    if not cfg.data:
        raise SafelabError("a probe sweep needs data: pass --data FILE (ProbeSweepConfig.data)")
    out = Path(out)
    t_start = time.perf_counter()
    sae = None
    if cfg.sae:  # read before the model load and the sweep, which take a minute
        from safelab.sae.formats import load_sae

        sae = load_sae(cfg.sae)
    model, data = load_contrast_data(cfg, cfg.data)
    if sae is not None:
        sae.check_fits(model, f"--sae {cfg.sae}")
        model.resolve_sites(sae.site)

    def capture(sites: str) -> Any:
        return cached_activations(
            model, data, sites, cache_root=cfg.cache, batch_size=cfg.batch_size, progress=progress
        )

    cached = capture(cfg.sites)
    sites = list(cached.acts)
    if cfg.site:
        (site,) = (str(s) for s in model.resolve_sites(cfg.site))
        if site not in cached.acts:
            cached = capture(site)
        sites = [site]
    if progress:
        state = "cached" if cached.cached else f"captured in {cached.capture_s:.1f}s"
        print(f"{data.name}: {len(data)} examples, {len(sites)} sites; {state} ({cached.store})")
    split = make_split(
        data,
        test_frac=cfg.test_frac,
        seed=cfg.seed,
        group=cfg.group,
        domain=cfg.domain,
        train_on=names_list(cfg.train_on),
        test_on=names_list(cfg.test_on),
    )
    train, test, info = split
    if progress:
        print(info.line())
    embeddings = None
    if cfg.controls:
        from safelab.interp.controls import token_embeddings

        embeddings = token_embeddings(model, data)
    fit = SiteFit.of(
        data,
        method=cfg.method,  # type: ignore[arg-type]
        c=cfg.c,
        seed=cfg.seed,
        n_resamples=cfg.resamples,
        model=model.name,
        test_frac=cfg.test_frac,
    )
    labels = tuple(int(v) for v in data.labels)
    split_json = json.dumps(info.to_dict())
    cells = [
        ProbeCell(
            store=str(cached.store),
            site=s,
            labels=labels,
            train=tuple(int(i) for i in train),
            test=tuple(int(i) for i in test),
            fit=fit,
            controls=cfg.controls,
            probe_dir=str(out / "probes" / s),
            split=split_json,
        )
        for s in sites
    ]
    t0 = time.perf_counter()
    resumed = sum((out / "cells" / f"{c.key}.json").is_file() for c in cells)
    rows = run_grid(probe_cell, cells, out, ray=ray, progress=progress, desc="probe sites")
    results = {row["site"]: SiteResult(**row) for row in rows}
    if progress:
        for r in results.values():
            print_site(r)
    probes = {s: LinearProbe.load(out / "probes" / s) for s in sites}
    sweep = assemble_sweep(
        results,
        probes,
        data,
        split,
        fit,
        controls=cfg.controls,
        embeddings=embeddings,
        fit_s=time.perf_counter() - t0,
    )
    sae_probe = (
        _sae_column(cfg, sae, data, cached.acts, split, capture) if sae is not None else None
    )
    result = ProbeSweepResult(
        cfg=cfg,
        sweep=sweep,
        model=model.name,
        name=data.name,
        template=data.template,
        position=str(data.position),
        activation_cache=str(cached.store),
        timing={
            "capture_s": round(cached.capture_s, 2),
            "cached": cached.cached,
            "fit_and_metrics_s": round(sweep.fit_s, 2),
            "total_s": round(time.perf_counter() - t_start, 2),
        },
        split_line=info.line(),
        sae_probe=sae_probe,
        cells_resumed=resumed,
    )
    result.write(out)
    return result


def _sae_column(
    cfg: ProbeSweepConfig,
    sae: Any,
    data: ContrastSet,
    acts: dict[str, Any],
    split: Any,
    capture: Any,
) -> dict[str, Any]:
    """The k-sparse SAE-latent probe on the same rows and split as the dense probe at its site."""
    from safelab.sae.probe import sparse_probe

    x = acts.get(sae.site)
    if x is None:
        x = capture(sae.site).acts[sae.site]
    train, test, _ = split
    labels = np.asarray(data.labels)
    res = sparse_probe(
        sae,
        x[train],
        labels[train],
        x[test],
        labels[test],
        k=cfg.sae_k,
        seed=cfg.seed,
        n_resamples=cfg.resamples,
    )
    return {"sae": str(cfg.sae), "site": sae.site, **res.to_dict()}


# -- the generalisation matrix -------------------------------------------------------------


@dataclass(frozen=True)
class GeneralisationConfig(ContrastDataConfig):
    """Train a probe on each data set (or each domain of one), test it on every other."""

    data: tuple[str, ...] = option((), "two or more statement CSVs (or one with --domain)")
    site: str | None = option(None, "site to probe (default: the middle layer's resid_post)")
    method: str = option("logistic", "probe type", choices=("logistic", "mass_mean"))
    test_frac: float = option(0.25, "held-out fraction of the diagonal (groups kept whole)")
    group: str | None = option(
        None,
        "column whose rows stay on one side of the diagonal's split (default: pairs and "
        "near-duplicates are grouped)",
    )
    domain: str | None = option(None, "split one --data file into its domains by this column")


@dataclass
class GeneralisationResult:
    """The matrix and what ``metrics.json`` records with it."""

    cfg: GeneralisationConfig
    matrix: GeneralisationMatrix
    model: str
    timing: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.matrix.to_dict(),
            "model": self.model,
            "data": list(self.cfg.data),
            "domain": self.cfg.domain,
            "group": self.cfg.group,
            "limit": self.cfg.limit,
            "timing": self.timing,
            "config": config_dict(self.cfg),
        }

    def write(self, out: str | Path) -> Path:
        from safelab.report import plots

        out = Path(out)
        payload = self.to_dict()
        path = atomic_write_text(out / "metrics.json", json.dumps(payload, indent=2) + "\n")
        m = self.matrix
        img = plots.heatmap(
            m.auroc,
            m.names,
            out / "generalisation.png",
            title=f"AUROC, train row / test column, {m.site} ({m.method})",
        )
        plots.write_html(out / "report.html", "probe generalisation", [img], payload)
        return path

    def table_lines(self) -> list[str]:
        names, width = self.matrix.names, max(len(n) for n in self.matrix.names)
        lines = [" " * (width + 2) + " ".join(f"{n[:8]:>8}" for n in names)]
        for name, row in zip(names, self.matrix.auroc, strict=True):
            lines.append(f"{name:>{width}}  " + " ".join(f"{v:8.3f}" for v in row))
        return lines


def run_generalisation(
    cfg: GeneralisationConfig,
    out: str | Path,
    *,
    ray: str | None = None,
    progress: bool = True,
) -> GeneralisationResult:
    """Capture (or read the cache) each data set, fit on each, score on all, write it all.

    Each row of the matrix (one training set scored on every set) is one cell of
    :func:`safelab.distributed.run_grid` (``ray``: a Ray task; finished rows are kept in
    ``out/cells`` and skipped on a rerun).
    """
    from safelab.distributed import run_grid
    from safelab.errors import SafelabError
    from safelab.interp.actcache import cached_activations
    from safelab.interp.contrast import load_contrast, parse_position
    from safelab.interp.splits import column_values, make_split
    from safelab.interp.sweep import (
        MatrixPart,
        MatrixRowCell,
        assemble_matrix,
        matrix_row_cell,
    )
    from safelab.models.loading import load_model

    if cfg.domain and len(cfg.data) != 1:
        raise SafelabError("--domain splits one --data file into its domains: give one file")
    if not cfg.data:
        raise SafelabError("a generalisation matrix needs data: pass --data FILE [FILE ...]")
    model = load_model(cfg.model)
    site = cfg.site or f"blocks.{model.n_layers // 2}.resid_post"
    parts: list[MatrixPart] = []
    capture_s = 0.0
    fit_s = 0.0
    for path in cfg.data:
        data = load_contrast(
            path,
            model,
            template=cfg.template,  # type: ignore[arg-type]
            position=parse_position(cfg.position) if cfg.position else None,
            limit=cfg.limit,
            seed=cfg.seed,
        )
        cached = cached_activations(
            model,
            data,
            cfg.sites,
            cache_root=cfg.cache,
            batch_size=cfg.batch_size,
            progress=progress,
        )
        capture_s += cached.capture_s
        if site not in cached.acts:
            raise SafelabError(f"--site {site} is not among the captured --sites {cfg.sites}")
        if cfg.domain:
            values = column_values(data, cfg.domain)
            subsets = []
            for name in sorted(set(values)):
                idx = [i for i, v in enumerate(values) if v == name]
                part = data.subset(idx)
                part.name = name
                subsets.append((part, idx))
        else:
            subsets = [(data, list(range(len(data))))]
        t = time.perf_counter()
        for part, idx in subsets:
            train, test, _ = make_split(
                part, test_frac=cfg.test_frac, seed=cfg.seed, group=cfg.group
            )
            parts.append(
                MatrixPart(
                    name=part.name,
                    store=str(cached.store),
                    rows=tuple(idx),
                    labels=tuple(int(y) for y in part.labels),
                    train=tuple(int(i) for i in train),
                    test=tuple(int(i) for i in test),
                )
            )
        fit_s += time.perf_counter() - t
    if len(parts) < 2:
        raise SafelabError("a generalisation matrix needs at least two data sets")
    cells = [
        MatrixRowCell(i, site, tuple(parts), cfg.method, cfg.seed, cfg.resamples)
        for i in range(len(parts))
    ]
    t = time.perf_counter()
    rows = run_grid(matrix_row_cell, cells, out, ray=ray, progress=progress, desc="matrix rows")
    fit_s += time.perf_counter() - t
    matrix = assemble_matrix(site, cfg.method, cfg.seed, [p.name for p in parts], rows)
    result = GeneralisationResult(
        cfg,
        matrix,
        model.name,
        {"capture_s": round(capture_s, 2), "fit_s": round(fit_s, 2)},
    )
    result.write(out)
    return result
