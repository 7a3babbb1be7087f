"""Transcoder quality on held-out tokens of the store they were trained on.

- **explained variance of the MLP output** per layer: ``1 - sum ||y - y_hat||^2 / sum ||y -
  mean(y)||^2`` over held-out rows (``sample % holdout_every == 0``), the same skipped rows as
  training (first token, massive activations), with L0 and the dead fraction;
- **the replacement model**: every MLP replaced by its transcoder at once (the first token keeps
  its real MLP output, as in training), run on held-out sequences rebuilt from the store's
  token ids: next-token CE loss against the original model's, and the KL divergence
  ``KL(original || replacement)`` per token.

Intervals are 95% bootstrap intervals over held-out inputs (resampled with ``seed``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.interp.store import ActivationStore
from safelab.models.capture import right_pad
from safelab.sae.metrics import heldout_sequences
from safelab.sae.stream import RowFilter
from safelab.transcoders.transcoder import TranscoderSet

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel


def _rule(transcoders: TranscoderSet, layer: int) -> RowFilter:
    t = transcoders.meta.train or {}
    rec = (t.get("per_layer") or {}).get(str(layer), {})
    return RowFilter(
        int(t.get("holdout_every", 20)), bool(t.get("skip_first", True)), rec.get("max_norm")
    )


@torch.no_grad()
def layer_metrics(
    transcoders: TranscoderSet,
    store: ActivationStore,
    layer: int,
    *,
    resamples: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Held-out explained variance (with a bootstrap interval), L0 and dead fraction of a layer."""
    from safetensors import safe_open

    tc = transcoders[layer]
    rule = _rule(transcoders, layer)
    per: dict[int, list[Any]] = {}
    fired = torch.zeros(tc.d_sae, dtype=torch.bool)
    l0 = 0.0
    n = 0
    for shard in store.manifest.shards:
        with safe_open(str(store.path / shard["file"]), framework="pt") as f:
            x = f.get_tensor(f"blocks.{layer}.mlp_in")
            y = f.get_tensor(f"blocks.{layer}.mlp_out")
            sample, position = f.get_tensor("sample"), f.get_tensor("position")
        mask = rule.keep(y, sample, position) & rule.held_out(sample)
        if not mask.any():
            continue
        x, y, sample = x[mask].float(), y[mask].float(), sample[mask]
        a = tc.encode(x)
        y_hat = tc.decode(a, x)
        err = (y - y_hat).pow(2).sum(-1).double()
        fired |= (a > 0).any(0)
        l0 += float((a > 0).sum())
        n += len(x)
        for s in sample.unique().tolist():
            m = sample == s
            acc = per.setdefault(
                int(s), [0.0, 0.0, 0.0, torch.zeros(y.shape[1], dtype=torch.float64)]
            )
            acc[0] += float(m.sum())
            acc[1] += float(err[m].sum())
            acc[2] += float(y[m].double().pow(2).sum())
            acc[3] += y[m].double().sum(0)
    if n == 0:
        raise SafelabError(
            f"the store at {store.path} has no held-out rows for layer {layer}: capture more inputs"
        )
    keys = sorted(per)
    rows = np.array([per[k][0] for k in keys])
    err = np.array([per[k][1] for k in keys])
    sq = np.array([per[k][2] for k in keys])
    sums = torch.stack([per[k][3] for k in keys]).numpy()

    def ev(i: np.ndarray) -> float:
        mean = sums[i].sum(0) / rows[i].sum()
        return float(1 - err[i].sum() / (sq[i].sum() - rows[i].sum() * float(mean @ mean)))

    rng = np.random.default_rng(seed + layer)
    boots = [ev(rng.integers(0, len(keys), len(keys))) for _ in range(resamples)]
    return {
        "layer": layer,
        "explained_variance": ev(np.arange(len(keys))),
        "explained_variance_ci": [
            float(np.percentile(boots, 2.5)),
            float(np.percentile(boots, 97.5)),
        ],
        "l0": l0 / n,
        "dead_fraction": 1 - float(fired.float().mean()),
        "heldout_tokens": n,
    }


@torch.no_grad()
def replacement_losses(
    model: WhiteBoxModel,
    transcoders: TranscoderSet,
    seqs: list[list[int]],
    *,
    batch_size: int = 8,
) -> np.ndarray:
    """``[n_seqs, 4]``: summed CE original, summed CE replacement, summed KL, tokens."""
    out = np.zeros((len(seqs), 4))
    pad = model.tokenizer.pad_token_id
    skip_first = transcoders.meta.skip_first
    for lo in range(0, len(seqs), batch_size):
        batch = seqs[lo : lo + batch_size]
        ids, attn = right_pad(batch, pad, model.device)
        clean = model.hf(input_ids=ids, attention_mask=attn).logits.float()
        with model.hooks(replace_all_mlps(model, transcoders, skip_first)):
            repl = model.hf(input_ids=ids, attention_mask=attn).logits.float()
        target = ids[:, 1:]
        valid = attn[:, 1:].bool()
        lp_c = torch.log_softmax(clean[:, :-1], -1)
        lp_r = torch.log_softmax(repl[:, :-1], -1)
        ce_c = -lp_c.gather(-1, target[..., None])[..., 0]
        ce_r = -lp_r.gather(-1, target[..., None])[..., 0]
        kl = (lp_c.exp() * (lp_c - lp_r)).sum(-1)
        sl = slice(lo, lo + len(batch))
        out[sl, 0] = (ce_c * valid).sum(1).cpu().numpy()
        out[sl, 1] = (ce_r * valid).sum(1).cpu().numpy()
        out[sl, 2] = (kl * valid).sum(1).cpu().numpy()
        out[sl, 3] = valid.sum(1).cpu().numpy()
    return out


def replace_all_mlps(
    model: WhiteBoxModel, transcoders: TranscoderSet, skip_first: bool
) -> dict[str, Any]:
    """Hooks that swap every MLP's output for its transcoder's reconstruction of its input."""
    seen: dict[int, Tensor] = {}
    fns: dict[str, Any] = {}
    for layer in range(model.n_layers):
        tc = transcoders[layer]

        def read(t: Tensor, layer: int = layer) -> None:
            seen[layer] = t

        def write(t: Tensor, layer: int = layer, tc: Any = tc) -> Tensor:
            new = tc(seen[layer].float()).to(t.dtype)
            if skip_first:
                new[:, 0] = t[:, 0]
            return new

        fns[f"blocks.{layer}.mlp_in"] = read
        fns[f"blocks.{layer}.mlp_out"] = write
    return fns


def evaluate_set(
    transcoders: TranscoderSet,
    store: ActivationStore,
    model: WhiteBoxModel | None = None,
    *,
    ce_tokens: int = 4096,
    resamples: int = 200,
    seed: int = 0,
) -> dict[str, Any]:
    """Per-layer metrics and (with a model) the replacement model's CE and KL, with intervals."""
    layers = [
        layer_metrics(transcoders, store, layer, resamples=resamples, seed=seed)
        for layer in sorted(transcoders.files)
    ]
    evs = [m["explained_variance"] for m in layers]
    out: dict[str, Any] = {
        "layers": layers,
        "explained_variance_mean": float(np.mean(evs)),
        "explained_variance_min": float(np.min(evs)),
        "seed": seed,
    }
    if model is not None:
        transcoders.check_fits(model)
        rule = _rule(transcoders, 0)
        seqs = heldout_sequences(store, rule, ce_tokens)
        ce = replacement_losses(model, transcoders, seqs)
        rng = np.random.default_rng(seed)

        def summary(i: np.ndarray) -> tuple[float, float, float]:
            tok = ce[i, 3].sum()
            return ce[i, 0].sum() / tok, ce[i, 1].sum() / tok, ce[i, 2].sum() / tok

        c, r, k = summary(np.arange(len(ce)))
        boots = np.array([summary(rng.integers(0, len(ce), len(ce))) for _ in range(resamples)])
        lo, hi = np.percentile(boots, 2.5, axis=0), np.percentile(boots, 97.5, axis=0)
        out.update(
            ce_original=c,
            ce_original_ci=[float(lo[0]), float(hi[0])],
            ce_replacement=r,
            ce_replacement_ci=[float(lo[1]), float(hi[1])],
            kl_replacement=k,
            kl_replacement_ci=[float(lo[2]), float(hi[2])],
            ce_tokens=int(ce[:, 3].sum()),
        )
    return out


__all__ = ["evaluate_set", "layer_metrics", "replace_all_mlps", "replacement_losses"]
