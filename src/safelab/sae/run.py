"""SAE training as an experiment: ``SAERunConfig`` -> :func:`run_sae_train` -> ``SAETrainResult``.

The run reuses the activation store it is given (or ``OUT/store``) when its site and width match,
captures one otherwise (from ``data`` or the shared-data passages), trains a BatchTopK SAE on it
(:func:`safelab.sae.train.train_sae`, resumable from its checkpoint) and, unless told not to,
evaluates it on the held-out rows; the metrics go into the SAE's own ``cfg.json``::

    from safelab.sae.run import SAERunConfig, run_sae_train
    res = run_sae_train(SAERunConfig(site="blocks.15.resid_post", tokens=600_000), "runs/sae/l15")
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safelab.config import config_dict, option, parse_count
from safelab.errors import SafelabError
from safelab.files import atomic_write_text
from safelab.sae.train import SAETrainConfig

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel
    from safelab.sae.sae import SparseAutoencoder

# The trainer's own defaults (SAETrainConfig) are the only ones: this config reads them.
_T = SAETrainConfig(store="", out="")


@dataclass(frozen=True)
class SAERunConfig:
    """Where the activations come from, and how the SAE is trained on them."""

    site: str = option(_T.site, "site the SAE reads")
    model: str = option(_T.model, "model to capture from (and to score CE-loss recovered with)")
    expansion: int = option(_T.expansion, "d_sae / d_model")
    k: int = option(_T.k, "active latents per token")
    tokens: int = option(_T.tokens, "training tokens (2M)", parse=parse_count)
    batch_size: int = option(_T.batch_size, "tokens per step")
    base_lr: float = option(_T.base_lr, "lr at 2**14 latents")
    seed: int = option(_T.seed, "seed")
    checkpoint_every: int = option(_T.checkpoint_every, "steps")
    store: str | None = option(None, "activation store (default: OUT/store)")
    data: str | None = option(None, "texts (.txt/.csv/.jsonl; default: shared data)")
    capture_tokens: int | None = option(
        None,
        "tokens to capture when no store exists (default: --tokens; fewer means epochs)",
        parse=parse_count,
    )
    eval: bool = option(True, "skip the held-out metrics")
    capture_batch_size: int = option(16, "inputs per forward pass when capturing the store")
    shard_rows: int = option(16384, "rows per shard of the captured store")
    store_dtype: str = option("float16", "dtype of the captured store")

    def train_config(self, store: Path, out: Path) -> SAETrainConfig:
        return SAETrainConfig(
            store=str(store),
            out=str(out),
            site=self.site,
            model=self.model,
            expansion=self.expansion,
            k=self.k,
            tokens=self.tokens,
            batch_size=self.batch_size,
            base_lr=self.base_lr,
            seed=self.seed,
            checkpoint_every=self.checkpoint_every,
        )


@dataclass
class SAETrainResult:
    cfg: SAERunConfig
    sae: SparseAutoencoder
    store: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def training_texts(data: str | None, model: WhiteBoxModel, tokens: int) -> list[Any]:
    """``data``'s texts, or passages of the shared data of about ``tokens`` tokens."""
    if data:
        from safelab.data import read_inputs

        return list(read_inputs(data))
    from safelab.sae.texts import build_passages, read_sentences

    return build_passages(read_sentences(), model.tokenizer, tokens)


def prepare_store(
    cfg: SAERunConfig, out: str | Path, model: WhiteBoxModel, *, progress: bool = True
) -> Path:
    """Reuse ``cfg.store`` (or OUT/store) when its site and width match; capture it otherwise."""
    from safelab.interp.store import MANIFEST, ActivationStore, capture_to_store
    from safelab.sae.stream import check_store

    path = Path(cfg.store or Path(out) / "store")
    if (path / MANIFEST).is_file():
        store = ActivationStore(path)
        check_store(store, cfg.site, model.d_model)
        if store.manifest.complete or cfg.store:
            if progress:
                print(f"reusing the store at {path} ({len(store)} rows)")
            return path
    texts = training_texts(cfg.data, model, cfg.capture_tokens or cfg.tokens)
    if progress:
        print(f"capturing {cfg.site} for {len(texts)} texts into {path}")
    capture_to_store(
        model,
        texts,
        cfg.site,
        path,
        position="all",
        batch_size=cfg.capture_batch_size,
        shard_rows=cfg.shard_rows,
        dtype=cfg.store_dtype,
        meta={"data": str(cfg.data or "shared")},
        progress=progress,
    )
    return path


def run_sae_train(cfg: SAERunConfig, out: str | Path, *, progress: bool = True) -> SAETrainResult:
    """Prepare the store, train (or resume), evaluate, save; the SAE and its metrics."""
    from safelab.interp.store import ActivationStore
    from safelab.models.loading import load_model
    from safelab.sae.formats import save_sae
    from safelab.sae.metrics import evaluate
    from safelab.sae.train import train_sae

    out = Path(out)
    model = load_model(cfg.model, dtype="float32")
    store = prepare_store(cfg, out, model, progress=progress)
    sae = train_sae(cfg.train_config(store, out), progress=progress)
    result = SAETrainResult(cfg, sae, store)
    if cfg.eval:
        result.metrics = evaluate(sae, ActivationStore(store), model)
        sae.cfg = sae.cfg.replace(metrics=result.metrics)
        save_sae(sae, out)
    return result


@dataclass(frozen=True)
class SAEEvalConfig:
    """``safelab sae eval``: held-out EV, L0, dead fraction and CE-loss recovered of one SAE."""

    sae: str = option("", "SAE folder (SAELens, sparsify or Gemma Scope)")
    store: str | None = option(None, "store (default: the one it was trained on)")
    model: str | None = option(None, "model for CE recovered (default: the SAE's)")
    ce_tokens: int = option(8192, "0 skips CE recovered", parse=parse_count)
    seed: int = option(0, "bootstrap and CE-sample seed")


@dataclass
class SAEEvalResult:
    """An SAE's held-out metrics; ``saved_into`` is the cfg.json they were written into, if any."""

    cfg: SAEEvalConfig
    metrics: dict[str, Any]
    saved_into: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        shown = {k: v for k, v in self.metrics.items() if not k.startswith("_")}
        return {**shown, "config": config_dict(self.cfg)}

    def write(self, out: str | Path) -> Path:
        path = Path(out) / "metrics.json"
        return atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")


def run_sae_eval(cfg: SAEEvalConfig, out: str | Path | None = None) -> SAEEvalResult:
    """Evaluate ``cfg.sae`` on its store; the metrics go into its own cfg.json when safelab or
    SAELens wrote it, and into ``out/metrics.json`` when ``out`` is given."""
    from safelab.interp.store import ActivationStore
    from safelab.models.loading import load_model
    from safelab.sae.formats import SAELENS_WEIGHTS, load_sae, save_sae
    from safelab.sae.metrics import evaluate

    sae = load_sae(cfg.sae)
    store_path = cfg.store or sae.cfg.train.get("store")
    if not store_path:
        raise SafelabError(f"{cfg.sae} does not name its store: pass --store")
    model = None
    if cfg.ce_tokens > 0:
        model = load_model(cfg.model or sae.cfg.model or "default", dtype="float32")
    metrics = evaluate(
        sae, ActivationStore(store_path), model, ce_tokens=cfg.ce_tokens, seed=cfg.seed
    )
    result = SAEEvalResult(cfg, metrics)
    folder = Path(cfg.sae)
    if (folder / SAELENS_WEIGHTS).is_file() and sae.cfg.source_format in ("safelab", "saelens"):
        sae.cfg = sae.cfg.replace(metrics={**sae.cfg.metrics, **metrics})
        save_sae(sae, folder)
        result.saved_into = folder / "cfg.json"
    if out is not None:
        result.write(out)
    return result


@dataclass(frozen=True)
class SAESiteCell:
    """One SAE of a per-layer run: the run's config at one site, trained into ``out``."""

    cfg: SAERunConfig
    out: str
    threads: int = 1
    """Torch CPU threads while the cell runs (as many as its Ray task declares), so the cell
    computes the same numbers here and in a Ray worker."""

    @property
    def key(self) -> str:
        import hashlib

        digest = hashlib.sha256(repr(self.cfg).encode()).hexdigest()[:12]
        return f"sae-{self.cfg.site}-{digest}"


def sae_site_cell(cell: SAESiteCell) -> dict[str, Any]:
    """Train (or resume) one site's SAE; its folder and held-out metrics as JSON."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(cell.threads)
    try:
        res = run_sae_train(cell.cfg, cell.out, progress=False)
    finally:
        torch.set_num_threads(before)
    shown = {k: v for k, v in res.metrics.items() if not k.startswith("_")}
    return {"site": cell.cfg.site, "sae": cell.out, "store": str(res.store), "metrics": shown}


def run_sae_layers(
    cfg: SAERunConfig,
    sites: tuple[str, ...] | list[str],
    out: str | Path,
    *,
    ray: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """One SAE per site (``out/<site>``, each with its own store), as cells of
    :func:`safelab.distributed.run_grid` (``ray``: one Ray task per SAE, loading the model
    itself); a rerun skips finished SAEs. Writes ``out/metrics.json`` (config, sites, metrics)."""
    from dataclasses import replace

    from safelab.distributed import Resources, run_grid

    if not sites:
        raise SafelabError("no sites: give --sites SITE [SITE ...]")
    if cfg.store:
        raise SafelabError("--store names one site's store: drop it when training per --sites")
    out = Path(out)
    cells = [SAESiteCell(replace(cfg, site=s), str(out / s)) for s in sites]
    rows = run_grid(
        sae_site_cell, cells, out, ray=ray, resources=Resources(num_cpus=1), progress=progress,
        desc="SAEs",
    )  # fmt: skip
    payload = {"config": config_dict(cfg), "sites": list(sites), "saes": rows}
    atomic_write_text(out / "metrics.json", json.dumps(payload, indent=2) + "\n")
    return payload
