"""BatchTopK SAE training on CPU from an activation store, saved as a JumpReLU SAE.

The recipe (Gao et al. 2024, "Scaling and evaluating sparse autoencoders"; Bussmann et al. 2024,
"BatchTopK sparse autoencoders"):

- inputs are divided by ``scale`` (their mean norm over a sample) so the learning rate does not
  depend on the model's activation scale; the scale is folded back into the saved weights;
- ``b_dec`` starts at the geometric median of a sample (Weiszfeld iterations), ``W_dec`` at random
  unit-norm rows and ``W_enc`` at ``W_dec^T``;
- the code is ``BatchTopK``: the ``k * batch`` largest ReLU pre-activations of the whole batch;
- the loss is the squared error plus ``aux_coef`` times AuxK: the ``aux_k`` largest pre-activations
  of *dead* latents (not fired for ``dead_tokens`` tokens) reconstructing the residual error,
  normalised by the error's variance, which revives dead latents;
- decoder rows stay unit-norm: the gradient's component along each row is removed before the step
  and the rows are renormalised after it;
- Adam with ``lr = base_lr / sqrt(d_sae / 2**14)`` (Gao et al.'s scaling of the learning rate with
  the number of latents), constant, then linearly decayed to zero over the last ``decay_frac``;
- after training, BatchTopK becomes JumpReLU with one threshold, the mean over ``threshold_batches``
  training batches of the smallest activation BatchTopK kept (Bussmann et al.'s choice, and what
  SAELens does when it exports a BatchTopK SAE), written to every latent's ``threshold``, so that
  inference does not depend on the batch.

Decoding gathers only the ``k`` active rows of ``W_dec`` per token rather than multiplying by the
dense code, which is most of the speed on CPU (see ``bench/sae.py``). Checkpoints (one atomic
safetensors file holding weights, Adam moments, dead-latent counters and the JSON state) are written
every ``checkpoint_every`` steps; a rerun with the same config resumes from the last one and ends
with the same weights as an uninterrupted run, because the batch order is a function of the seed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.files import atomic_write_text, tmp_path_beside
from safelab.interp.store import ActivationStore
from safelab.sae.formats import save_sae
from safelab.sae.sae import SAEConfig, SparseAutoencoder
from safelab.sae.stream import RowFilter, batches, check_store, median_norm

CHECKPOINT = "checkpoint.safetensors"
_RESUME_KEYS = ("site", "expansion", "k", "batch_size", "base_lr", "aux_k", "aux_coef", "seed")


@dataclass
class SAETrainConfig:
    """Everything a training run depends on: the CLI's options and the artifact's metadata."""

    store: str
    out: str
    site: str = "blocks.15.resid_post"
    model: str = "default"
    expansion: int = 8
    k: int = 32
    tokens: int = 2_000_000
    batch_size: int = 1024
    base_lr: float = 8e-4
    aux_k: int = 256
    aux_coef: float = 1 / 32
    dead_tokens: int = 200_000
    decay_frac: float = 0.2
    seed: int = 0
    checkpoint_every: int = 100
    holdout_every: int = 20
    skip_first: bool = True
    max_norm_ratio: float = 10.0
    geomedian_rows: int = 4096
    threshold_batches: int = 20

    @property
    def steps(self) -> int:
        return max(1, math.ceil(self.tokens / self.batch_size))

    def lr(self, d_sae: int) -> float:
        """``base_lr / sqrt(d_sae / 2**14)``."""
        return self.base_lr / math.sqrt(d_sae / 2**14)


def geometric_median(x: Tensor, iters: int = 100, eps: float = 1e-8) -> Tensor:
    """The point minimising the sum of Euclidean distances to the rows of ``x`` (Weiszfeld)."""
    y = x.mean(0)
    for _ in range(iters):
        w = 1.0 / (x - y).norm(dim=1).clamp_min(eps)
        y_new = (w[:, None] * x).sum(0) / w.sum()
        if (y_new - y).norm() < 1e-6 * y.norm().clamp_min(1.0):
            return y_new
        y = y_new
    return y


def batch_topk(pre: Tensor, n_keep: int, hint: float = 0.0) -> tuple[Tensor, Tensor]:
    """The ``n_keep`` largest ReLU entries of ``pre``: ``(values, flat indices)``, indices sorted.

    A full ``topk`` over ``batch * d_sae`` entries costs more than the encoder's matmul on CPU,
    so when ``hint`` (a value just below the previous batch's cut) leaves at least ``n_keep``
    candidates, only those are ranked; the answer is the same (all kept entries exceed the
    cut), and when too few pass it falls back to the full ``topk``.
    """
    flat = pre.flatten()
    if hint > 0:
        cand = (flat.detach() > hint).nonzero().squeeze(1)
        if len(cand) >= n_keep:
            top = flat[cand].topk(n_keep, sorted=False)
            idx, order = torch.sort(cand[top.indices])
            return top.values[order], idx
    top = torch.relu(flat).topk(min(n_keep, flat.numel()), sorted=False)
    idx, order = torch.sort(top.indices)
    return top.values[order], idx


def sparse_decode(values: Tensor, rows: Tensor, cols: Tensor, w_dec: Tensor, n: int) -> Tensor:
    """``sum_j values_j * W_dec[cols_j]`` into row ``rows_j`` of an ``[n, d]`` output.

    ``rows`` must be sorted. ``embedding_bag`` gathers only the active rows of ``W_dec`` (and
    scatters only their gradient), instead of multiplying the dense ``[n, d_sae]`` code.
    """
    counts = torch.bincount(rows, minlength=n)
    offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)[:-1]])
    return torch.nn.functional.embedding_bag(
        cols, w_dec, offsets, mode="sum", per_sample_weights=values
    )


class BatchTopKTrainer:
    """The training state: weights in normalised units, Adam, dead-latent counters."""

    def __init__(self, cfg: SAETrainConfig, d_in: int) -> None:
        self.cfg = cfg
        self.d_in, self.d_sae = d_in, d_in * cfg.expansion
        g = torch.Generator().manual_seed(cfg.seed)
        w_dec = torch.randn(self.d_sae, d_in, generator=g)
        w_dec /= w_dec.norm(dim=1, keepdim=True)
        self.W_enc = w_dec.T.clone().contiguous().requires_grad_()
        self.W_dec = w_dec.requires_grad_()
        self.b_enc = torch.zeros(self.d_sae, requires_grad=True)
        self.b_dec = torch.zeros(d_in, requires_grad=True)
        self.params = {
            "W_enc": self.W_enc,
            "b_enc": self.b_enc,
            "W_dec": self.W_dec,
            "b_dec": self.b_dec,
        }
        # Adam by hand (torch.optim imports torch._dynamo: ~20 s on a loaded 2-core machine).
        self.exp_avg = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.exp_avg_sq = {k: torch.zeros_like(v) for k, v in self.params.items()}
        self.since_fired = torch.zeros(self.d_sae, dtype=torch.long)
        self.scale = 1.0
        self.cut = 0.0  # the previous batch's smallest kept activation (a hint for batch_topk)
        self.step = 0
        self.history: list[dict[str, float]] = []

    def encode_batch(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """BatchTopK: ``(pre, values, rows, cols)`` of the ``k * batch`` largest activations."""
        pre = (x - self.b_dec) @ self.W_enc + self.b_enc
        values, idx = batch_topk(pre, self.cfg.k * len(x), 0.9 * self.cut)
        if len(values):
            self.cut = float(values.detach().min())
        return pre, values, idx // self.d_sae, idx % self.d_sae

    def train_step(self, x: Tensor) -> dict[str, float]:
        pre, values, rows, cols = self.encode_batch(x)
        x_hat = sparse_decode(values, rows, cols, self.W_dec, len(x)) + self.b_dec
        return self.fit_step(pre, cols, x, x_hat)

    def fit_step(
        self, pre: Tensor, cols: Tensor, target: Tensor, y_hat: Tensor
    ) -> dict[str, float]:
        """One optimiser step on ``target`` reconstructed as ``y_hat``: MSE plus the AuxK loss of
        the dead latents, decoder rows kept at unit norm, firing counts updated.

        Shared by the SAE (``target`` is the input) and the transcoder (``target`` is the MLP's
        output) so that both train by the same rule.
        """
        cfg = self.cfg
        x = target
        err = x - y_hat
        mse = err.pow(2).sum(-1).mean()
        total_var = (x - x.mean(0)).pow(2).sum(-1).mean()
        dead = self.since_fired >= cfg.dead_tokens
        aux = torch.zeros(())
        n_dead = int(dead.sum())
        if n_dead:
            k_aux = min(cfg.aux_k, n_dead)
            top = pre.masked_fill(~dead, -math.inf).topk(k_aux, dim=-1)
            r = torch.arange(len(x)).repeat_interleave(k_aux)
            e_hat = sparse_decode(
                torch.relu(top.values).flatten(), r, top.indices.flatten(), self.W_dec, len(x)
            )
            e = err.detach()
            aux = (e_hat - e).pow(2).sum(-1).mean() / (e - e.mean(0)).pow(2).sum(
                -1
            ).mean().clamp_min(1e-12)
            aux = torch.nan_to_num(aux, nan=0.0)
        loss = mse + cfg.aux_coef * aux
        for p in self.params.values():
            p.grad = None
        loss.backward()
        with torch.no_grad():
            g = self.W_dec.grad
            assert g is not None
            g -= (g * self.W_dec).sum(1, keepdim=True) * self.W_dec
            self._adam(self._lr_at(self.step))
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)
            fired = torch.zeros(self.d_sae, dtype=torch.bool)
            fired[cols] = True
            self.since_fired += len(x)
            self.since_fired[fired] = 0
        self.step += 1
        rec = {
            "step": self.step,
            "fvu": float(mse.detach() / total_var.clamp_min(1e-12)),
            "aux": float(aux.detach()),
            "dead_frac": n_dead / self.d_sae,
        }
        self.history.append(rec)
        return rec

    def _adam(self, lr: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> None:
        t = self.step + 1
        c1, c2 = 1 - b1**t, 1 - b2**t
        for name, p in self.params.items():
            g = p.grad
            assert g is not None
            m, v = self.exp_avg[name], self.exp_avg_sq[name]
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            p.addcdiv_(m, (v / c2).sqrt_().add_(eps), value=-lr / c1)

    def _lr_at(self, step: int) -> float:
        lr = self.cfg.lr(self.d_sae)
        total = self.cfg.steps
        start = int(total * (1 - self.cfg.decay_frac))
        if step < start:
            return lr
        return lr * max(0.0, (total - step) / max(1, total - start))

    # -- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self, path: Path, extra: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().clone() for k, v in self.params.items()}
        for name in self.params:
            tensors[f"adam.{name}.exp_avg"] = self.exp_avg[name].clone()
            tensors[f"adam.{name}.exp_avg_sq"] = self.exp_avg_sq[name].clone()
        tensors["since_fired"] = self.since_fired.clone()
        state = {
            "step": self.step,
            "scale": self.scale,
            "cut": self.cut,
            "history": self.history,
            **extra,
        }
        tmp = tmp_path_beside(path)
        save_file(tensors, str(tmp), metadata={"state": json.dumps(state)})
        os.replace(tmp, path)

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            state = json.loads((f.metadata() or {})["state"])
            t = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
        with torch.no_grad():
            for name, p in self.params.items():
                p.copy_(t[name])
                self.exp_avg[name].copy_(t[f"adam.{name}.exp_avg"])
                self.exp_avg_sq[name].copy_(t[f"adam.{name}.exp_avg_sq"])
        self.since_fired = t["since_fired"].long()
        self.step, self.scale, self.cut = int(state["step"]), float(state["scale"]), state["cut"]
        self.history = state["history"]
        return dict(state)

    # -- export ------------------------------------------------------------------------------
    def calibrate_threshold(self, stream: Any) -> float:
        """Mean over batches of the smallest activation BatchTopK kept (normalised units)."""
        mins = []
        with torch.no_grad():
            for _ in range(max(1, self.cfg.threshold_batches)):
                _, values, _, _ = self.encode_batch(next(stream) / self.scale)
                kept = values[values > 0]
                if len(kept):
                    mins.append(float(kept.min()))
        return sum(mins) / len(mins) if mins else 0.0

    def to_sae(self, threshold: float, model: str) -> SparseAutoencoder:
        """The JumpReLU SAE in the model's own units (the normalisation folded in)."""
        s = self.scale
        with torch.no_grad():
            w_enc = self.W_enc.detach()
            b_enc = s * (self.b_enc.detach() - self.b_dec.detach() @ w_enc)
            cfg = SAEConfig(
                d_in=self.d_in,
                d_sae=self.d_sae,
                site=self.cfg.site,
                architecture="jumprelu",
                k=self.cfg.k,
                model=model,
                source_format="safelab",
                train={
                    **dataclasses.asdict(self.cfg),
                    "lr": self.cfg.lr(self.d_sae),
                    "scale": s,
                    "threshold": threshold * s,
                    "steps_done": self.step,
                },
            )
            return SparseAutoencoder.from_tensors(
                cfg,
                {
                    "W_enc": w_enc,
                    "b_enc": b_enc,
                    "W_dec": self.W_dec.detach(),
                    "b_dec": s * self.b_dec.detach(),
                    "threshold": torch.full((self.d_sae,), threshold * s),
                },
            )


def train_sae(
    cfg: SAETrainConfig,
    *,
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> SparseAutoencoder:
    """Train (or resume) a BatchTopK SAE on ``cfg.store`` and save it as JumpReLU in ``cfg.out``.

    Args:
        cfg: the run's config (saved with the SAE).
        progress: show a rich progress bar.
        on_step: called with the step number after each step (tests use it to interrupt).

    Raises:
        SafelabError: the store lacks the site, or ``cfg.out`` holds a checkpoint of another config.
    """
    if cfg.k < 1 or cfg.expansion < 1 or cfg.batch_size < 1:
        raise SafelabError("k, expansion and batch_size must be at least 1")
    store = ActivationStore(cfg.store)
    check_store(store, cfg.site)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT
    trainer = BatchTopKTrainer(cfg, store.manifest.d_model)
    if ckpt.is_file():
        state = trainer.load_checkpoint(ckpt)
        saved = state.get("config", {})
        for key in _RESUME_KEYS:
            if saved.get(key) != getattr(cfg, key):
                raise SafelabError(
                    f"{out} holds a checkpoint trained with {key}={saved.get(key)!r}, not "
                    f"{getattr(cfg, key)!r}: use another --out or delete {ckpt}"
                )
        rule = RowFilter(cfg.holdout_every, cfg.skip_first, state["max_norm"])
    else:
        cap = median_norm(store, cfg.site) * cfg.max_norm_ratio if cfg.max_norm_ratio > 0 else None
        rule = RowFilter(cfg.holdout_every, cfg.skip_first, cap)
        sample = _first_rows(
            batches(store, cfg.site, rule, cfg.batch_size, cfg.seed), cfg.geomedian_rows
        )
        trainer.scale = float(sample.norm(dim=1).mean())
        with torch.no_grad():
            trainer.b_dec.copy_(geometric_median(sample / trainer.scale))
    extra = {"config": dataclasses.asdict(cfg), "max_norm": rule.max_norm}
    stream = batches(store, cfg.site, rule, cfg.batch_size, cfg.seed)
    for _ in range(trainer.step):  # replay the batch order up to the checkpoint
        next(stream)
    bar = _Progress(progress, cfg.steps, trainer.step)
    try:
        while trainer.step < cfg.steps:
            rec = trainer.train_step(next(stream) / trainer.scale)
            bar.update(rec)
            if trainer.step % cfg.checkpoint_every == 0 or trainer.step == cfg.steps:
                trainer.save_checkpoint(ckpt, extra)
            if on_step is not None:
                on_step(trainer.step)
    finally:
        bar.close()
    threshold = trainer.calibrate_threshold(
        batches(store, cfg.site, rule, cfg.batch_size, cfg.seed + 1)
    )
    # cfg.model is what load_model accepts ("default", a folder); the store names the weights.
    sae = trainer.to_sae(threshold, cfg.model)
    sae.cfg = sae.cfg.replace(
        train={**sae.cfg.train, "max_norm": rule.max_norm, "store_model": store.manifest.model}
    )
    save_sae(sae, out)
    atomic_write_text(out / "history.json", json.dumps(trainer.history) + "\n")
    return sae


def _first_rows(stream: Any, n: int) -> Tensor:
    parts, got = [], 0
    while got < n:
        b = next(stream)
        parts.append(b)
        got += len(b)
    return torch.cat(parts)[:n]


class _Progress:
    def __init__(self, enabled: bool, total: int, done: int) -> None:
        self.bar: Any = None
        if enabled:
            from rich.progress import Progress

            self.bar = Progress(*Progress.get_default_columns(), "{task.fields[info]}")
            self.bar.start()
            self.task = self.bar.add_task("sae train", total=total, completed=done, info="")

    def update(self, rec: dict[str, float]) -> None:
        if self.bar is not None:
            info = f"fvu {rec['fvu']:.3f} dead {rec['dead_frac']:.2f}"
            self.bar.update(self.task, advance=1, info=info)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
