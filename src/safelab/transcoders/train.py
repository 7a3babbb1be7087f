"""Per-layer transcoders trained on CPU with the SAE trainer's machinery.

:class:`TranscoderTrainer` is :class:`safelab.sae.train.BatchTopKTrainer` with a different input
and target: it encodes what block L's MLP reads (``blocks.L.mlp_in``) and reconstructs what the
MLP writes (``blocks.L.mlp_out``), optionally with a linear skip connection ``x @ W_skip``
(Paulo et al. 2025, "Transcoders beat sparse autoencoders for interpretability"). Everything
else is inherited: BatchTopK with its cut hint, AuxK for dead latents, unit-norm decoder rows,
Adam by hand with the learning-rate schedule, atomic checkpoints with resume, and the JumpReLU
export (one threshold, the mean smallest kept activation). Input and target are normalised
separately (each by its mean norm); both scales are folded into the saved weights, so
activations are in units of the MLP output.

:func:`train_transcoders` trains every layer in turn from one activation store holding both
sites and writes each finished layer as circuit-tracer's ``layer_L.safetensors``: a rerun skips
finished layers and resumes the interrupted one from its checkpoint.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.files import atomic_write_text
from safelab.interp.store import ActivationStore
from safelab.sae.stream import RowFilter, median_norm
from safelab.sae.train import (
    CHECKPOINT,
    BatchTopKTrainer,
    SAETrainConfig,
    batch_topk,
    geometric_median,
    sparse_decode,
)
from safelab.transcoders.transcoder import (
    Transcoder,
    TranscoderSetMeta,
    layer_file,
    save_layer,
    write_set_files,
)

_RESUME_KEYS = ("expansion", "k", "batch_size", "base_lr", "tokens", "seed", "skip")


def in_site(layer: int) -> str:
    return f"blocks.{layer}.mlp_in"


def out_site(layer: int) -> str:
    return f"blocks.{layer}.mlp_out"


@dataclass(frozen=True)
class TranscoderTrainConfig:
    """A transcoder-set training run: the CLI's options and the set's metadata."""

    store: str
    out: str
    model: str = "default"
    layers: tuple[int, ...] | None = None
    """Layers to train (default: every layer of the store's model)."""
    expansion: int = 4
    k: int = 32
    tokens: int = 150_000
    batch_size: int = 512
    base_lr: float = 8e-4
    aux_k: int = 256
    aux_coef: float = 1 / 32
    dead_tokens: int = 50_000
    decay_frac: float = 0.2
    seed: int = 0
    skip: bool = False
    checkpoint_every: int = 50
    holdout_every: int = 20
    skip_first: bool = True
    max_norm_ratio: float = 10.0
    geomedian_rows: int = 2048
    threshold_batches: int = 10

    def sae_config(self, layer: int) -> SAETrainConfig:
        """The per-layer config the inherited trainer reads (same keys, ``site`` = the target)."""
        return SAETrainConfig(
            store=self.store,
            out=str(Path(self.out) / ".work" / f"layer_{layer}"),
            site=out_site(layer),
            model=self.model,
            expansion=self.expansion,
            k=self.k,
            tokens=self.tokens,
            batch_size=self.batch_size,
            base_lr=self.base_lr,
            aux_k=self.aux_k,
            aux_coef=self.aux_coef,
            dead_tokens=self.dead_tokens,
            decay_frac=self.decay_frac,
            seed=self.seed + layer,
            checkpoint_every=self.checkpoint_every,
            holdout_every=self.holdout_every,
            skip_first=self.skip_first,
            max_norm_ratio=self.max_norm_ratio,
            geomedian_rows=self.geomedian_rows,
            threshold_batches=self.threshold_batches,
        )


class TranscoderTrainer(BatchTopKTrainer):
    """BatchTopK over the MLP input, reconstructing the MLP output (optionally with a skip)."""

    def __init__(self, cfg: SAETrainConfig, d_in: int, d_out: int, skip: bool) -> None:
        if d_in != d_out:
            raise SafelabError(f"transcoders here need d_in == d_out, got {d_in} and {d_out}")
        super().__init__(cfg, d_in)
        self.scale_in = 1.0
        self.W_skip: Tensor | None = None
        if skip:
            self.W_skip = torch.zeros(d_in, d_out, requires_grad=True)
            self.params["W_skip"] = self.W_skip
            self.exp_avg["W_skip"] = torch.zeros_like(self.W_skip)
            self.exp_avg_sq["W_skip"] = torch.zeros_like(self.W_skip)

    def encode_pair(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """BatchTopK of ``x @ W_enc + b_enc`` (the input is not centred by the output bias)."""
        pre = x @ self.W_enc + self.b_enc
        values, idx = batch_topk(pre, self.cfg.k * len(x), 0.9 * self.cut)
        if len(values):
            self.cut = float(values.detach().min())
        return pre, values, idx // self.d_sae, idx % self.d_sae

    def train_pair(self, x: Tensor, y: Tensor) -> dict[str, float]:
        """One step on normalised ``(input, target)`` rows."""
        pre, values, rows, cols = self.encode_pair(x)
        y_hat = sparse_decode(values, rows, cols, self.W_dec, len(x)) + self.b_dec
        if self.W_skip is not None:
            y_hat = y_hat + x @ self.W_skip
        return self.fit_step(pre, cols, y, y_hat)

    def calibrate_pairs(self, stream: Iterator[tuple[Tensor, Tensor]]) -> float:
        """Mean over batches of the smallest activation BatchTopK kept (normalised units)."""
        mins = []
        with torch.no_grad():
            for _ in range(max(1, self.cfg.threshold_batches)):
                x, _ = next(stream)
                _, values, _, _ = self.encode_pair(x / self.scale_in)
                kept = values[values > 0]
                if len(kept):
                    mins.append(float(kept.min()))
        return sum(mins) / len(mins) if mins else 0.0

    def to_transcoder(self, layer: int, threshold: float) -> Transcoder:
        """Fold both scales in: activations come out in units of the MLP output."""
        s_in, s_out = self.scale_in, self.scale
        with torch.no_grad():
            return Transcoder(
                layer=layer,
                W_enc=self.W_enc.detach() * (s_out / s_in),
                b_enc=self.b_enc.detach() * s_out,
                W_dec=self.W_dec.detach().clone(),
                b_dec=self.b_dec.detach() * s_out,
                threshold=torch.full((self.d_sae,), threshold * s_out),
                W_skip=None if self.W_skip is None else self.W_skip.detach() * (s_out / s_in),
            )


# -- rows ------------------------------------------------------------------------------------
def pair_rows(
    store: ActivationStore, layer: int, rule: RowFilter, seed: int, epoch: int, held: bool
) -> Iterator[tuple[Tensor, Tensor]]:
    """``(mlp_in, mlp_out)`` rows of one shard at a time (training rows shuffled, or held out)."""
    from safetensors import safe_open

    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    shards = list(store.manifest.shards)
    order = list(range(len(shards))) if held else torch.randperm(len(shards), generator=g).tolist()
    for i in order:
        path = store.path / shards[i]["file"]
        try:
            with safe_open(str(path), framework="pt") as f:
                x, y = f.get_tensor(in_site(layer)), f.get_tensor(out_site(layer))
                sample, position = f.get_tensor("sample"), f.get_tensor("position")
        except Exception as e:
            raise SafelabError(
                f"{path} is not a readable store shard ({str(e)[:80]}): capture again"
            ) from None
        mask = rule.keep(y, sample, position)
        mask &= rule.held_out(sample) if held else ~rule.held_out(sample)
        xs, ys = x[mask].float(), y[mask].float()
        if not held:
            perm = torch.randperm(len(xs), generator=g)
            xs, ys = xs[perm], ys[perm]
        yield xs, ys


def pair_batches(
    store: ActivationStore, layer: int, rule: RowFilter, batch_size: int, seed: int
) -> Iterator[tuple[Tensor, Tensor]]:
    """An endless stream of ``[batch_size, d]`` ``(input, target)`` batches, epoch after epoch."""
    epoch = 0
    cx = cy = torch.empty(0)
    while True:
        got = False
        for xs, ys in pair_rows(store, layer, rule, seed, epoch, held=False):
            got = got or len(xs) > 0
            bx = torch.cat([cx, xs]) if len(cx) else xs
            by = torch.cat([cy, ys]) if len(cy) else ys
            n_full = len(bx) // batch_size
            for b in range(n_full):
                sl = slice(b * batch_size, (b + 1) * batch_size)
                yield bx[sl], by[sl]
            cx, cy = bx[n_full * batch_size :], by[n_full * batch_size :]
        if not got:
            raise SafelabError(
                f"the store at {store.path} has no training rows for layer {layer}: capture more"
            )
        epoch += 1


def check_pair_store(store: ActivationStore, layers: list[int]) -> None:
    missing = [
        s for layer in layers for s in (in_site(layer), out_site(layer)) if s not in store.sites
    ]
    if missing:
        raise SafelabError(
            f"the store at {store.path} lacks {', '.join(missing[:4])}"
            f"{'...' if len(missing) > 4 else ''}: capture blocks.*.mlp_in and blocks.*.mlp_out"
        )
    if not store.manifest.shards:
        raise SafelabError(f"the store at {store.path} has no rows yet: capture first")


# -- one layer, then the set -------------------------------------------------------------------
def train_layer(
    cfg: TranscoderTrainConfig,
    store: ActivationStore,
    layer: int,
    *,
    progress: Any = None,
    on_step: Callable[[int], None] | None = None,
) -> tuple[Transcoder, dict[str, Any]]:
    """Train (or resume) layer ``layer``'s transcoder; returns it with its training record."""
    scfg = cfg.sae_config(layer)
    work = Path(scfg.out)
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / CHECKPOINT
    d = store.manifest.d_model
    trainer = TranscoderTrainer(scfg, d, d, cfg.skip)
    if ckpt.is_file():
        state = trainer.load_checkpoint(ckpt)
        saved = state.get("config", {})
        for key in _RESUME_KEYS:
            if saved.get(key) != getattr(cfg, key):
                raise SafelabError(
                    f"{work} holds a checkpoint trained with {key}={saved.get(key)!r}, not "
                    f"{getattr(cfg, key)!r}: use another --out or delete {work}"
                )
        trainer.scale_in = float(state["scale_in"])
        rule = RowFilter(cfg.holdout_every, cfg.skip_first, state["max_norm"])
    else:
        cap = median_norm(store, out_site(layer)) * cfg.max_norm_ratio
        rule = RowFilter(cfg.holdout_every, cfg.skip_first, cap if cfg.max_norm_ratio > 0 else None)
        xs, ys = _first_pairs(
            pair_batches(store, layer, rule, cfg.batch_size, scfg.seed), cfg.geomedian_rows
        )
        trainer.scale_in = float(xs.norm(dim=1).mean())
        trainer.scale = float(ys.norm(dim=1).mean().clamp_min(1e-8))
        with torch.no_grad():
            trainer.b_dec.copy_(geometric_median(ys / trainer.scale))
    extra = {
        "config": {**dataclasses.asdict(cfg), "layers": None},
        "max_norm": rule.max_norm,
        "scale_in": trainer.scale_in,
    }
    stream = pair_batches(store, layer, rule, cfg.batch_size, scfg.seed)
    for _ in range(trainer.step):  # replay the batch order up to the checkpoint
        next(stream)
    t0 = time.perf_counter()
    while trainer.step < scfg.steps:
        x, y = next(stream)
        rec = trainer.train_pair(x / trainer.scale_in, y / trainer.scale)
        if progress is not None:
            progress(layer, rec)
        if trainer.step % cfg.checkpoint_every == 0 or trainer.step == scfg.steps:
            trainer.save_checkpoint(ckpt, extra)
        if on_step is not None:
            on_step(trainer.step)
    seconds = time.perf_counter() - t0
    threshold = trainer.calibrate_pairs(
        pair_batches(store, layer, rule, cfg.batch_size, scfg.seed + 7919)
    )
    tc = trainer.to_transcoder(layer, threshold)
    last = trainer.history[-20:]
    record = {
        "steps": trainer.step,
        "train_seconds_this_run": round(seconds, 2),
        "final_train_fvu": sum(r["fvu"] for r in last) / max(1, len(last)),
        "dead_frac": trainer.history[-1]["dead_frac"] if trainer.history else 0.0,
        "max_norm": rule.max_norm,
        "scale_in": trainer.scale_in,
        "scale_out": trainer.scale,
        "threshold": threshold * trainer.scale,
    }
    return tc, record


def train_transcoders(
    cfg: TranscoderTrainConfig,
    *,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> Path:
    """Train every layer's transcoder into ``cfg.out`` (circuit-tracer layout); resumable.

    Finished layers (``layer_L.safetensors`` present) are skipped; the interrupted one resumes
    from its checkpoint. Returns the folder.
    """
    if cfg.k < 1 or cfg.expansion < 1 or cfg.batch_size < 1:
        raise SafelabError("k, expansion and batch_size must be at least 1")
    store = ActivationStore(cfg.store)
    n_layers = 1 + max(
        (int(s.split(".")[1]) for s in store.sites if s.endswith(".mlp_out")), default=-1
    )
    layers = sorted(cfg.layers) if cfg.layers is not None else list(range(n_layers))
    check_pair_store(store, layers)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "safelab.json"
    meta = TranscoderSetMeta(
        model=str(store.manifest.model),
        n_layers=n_layers,
        d_model=store.manifest.d_model,
        skip_first=cfg.skip_first,
        train={**dataclasses.asdict(cfg), "layers": list(layers), "per_layer": {}},
    )
    if meta_path.is_file():
        old = json.loads(meta_path.read_text())
        per = (old.get("train") or {}).get("per_layer", {})
        for key in _RESUME_KEYS:
            if (old.get("train") or {}).get(key) != getattr(cfg, key):
                raise SafelabError(
                    f"{out} holds transcoders trained with {key}="
                    f"{(old.get('train') or {}).get(key)!r}, not {getattr(cfg, key)!r}: use another "
                    "--out or delete it"
                )
        meta.train["per_layer"] = per
        meta.metrics = old.get("metrics") or {}
    bar = _Bar(progress, len(layers) * cfg.sae_config(0).steps)
    try:
        for layer in layers:
            if (out / layer_file(layer)).is_file():
                bar.advance(cfg.sae_config(layer).steps)
                continue
            steps_cb = None if on_step is None else (lambda s, L=layer: on_step(L, s))
            tc, record = train_layer(cfg, store, layer, progress=bar.update, on_step=steps_cb)
            atomic_write_text(out / ".work" / f"layer_{layer}" / "record.json", json.dumps(record))
            save_layer(tc, out)
            _write_meta(out, meta, n_layers)
    finally:
        bar.close()
    _write_meta(out, meta, n_layers)
    return out


def _write_meta(out: Path, meta: TranscoderSetMeta, n_layers: int) -> None:
    """List the finished layers and gather their training records (several runs may share out)."""
    done = [x for x in range(n_layers) if (out / layer_file(x)).is_file()]
    for x in done:
        rec = out / ".work" / f"layer_{x}" / "record.json"
        if rec.is_file():
            meta.train["per_layer"][str(x)] = json.loads(rec.read_text())
    write_set_files(out, meta, done)


def _first_pairs(stream: Iterator[tuple[Tensor, Tensor]], n: int) -> tuple[Tensor, Tensor]:
    xs, ys, got = [], [], 0
    while got < n:
        x, y = next(stream)
        xs.append(x)
        ys.append(y)
        got += len(x)
    return torch.cat(xs)[:n], torch.cat(ys)[:n]


class _Bar:
    def __init__(self, enabled: bool, total: int) -> None:
        self.bar: Any = None
        if enabled:
            from rich.progress import Progress

            self.bar = Progress(*Progress.get_default_columns(), "{task.fields[info]}")
            self.bar.start()
            self.task = self.bar.add_task("transcoders", total=total, info="")

    def update(self, layer: int, rec: dict[str, float]) -> None:
        if self.bar is not None:
            info = f"layer {layer} fvu {rec['fvu']:.3f} dead {rec['dead_frac']:.2f}"
            self.bar.update(self.task, advance=1, info=info)

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
