"""SAE quality on held-out tokens: explained variance, L0, dead fraction, CE-loss recovered.

All four read the store's held-out inputs (``sample % holdout_every == 0``, never trained on) and
the same skipped rows as training (first token, massive activations; see
:mod:`safelab.sae.stream`).

- **explained variance**: ``1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2``;
- **L0**: mean number of active latents per token;
- **dead fraction**: latents that never fire on the held-out tokens;
- **CE-loss recovered**: the held-out token sequences (rebuilt from the store's token ids) are
  run three times: clean, with the SAE's reconstruction spliced in at the site, and with the
  site zero-ablated (both at the kept positions only); ``(CE_zero - CE_sae) / (CE_zero -
  CE_clean)``.

Intervals are 95% bootstrap intervals over held-out inputs (resampled with ``seed``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.interp.store import ActivationStore
from safelab.models.capture import right_pad
from safelab.sae.sae import SparseAutoencoder
from safelab.sae.stream import RowFilter, check_store
from safelab.stats import DEFAULT_RESAMPLES

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel


def row_filter(sae: SparseAutoencoder, holdout_every: int | None = None) -> RowFilter:
    """The row rule the SAE was trained with (defaults for SAEs trained elsewhere)."""
    t = sae.cfg.train
    return RowFilter(
        holdout_every=int(holdout_every or t.get("holdout_every", 20)),
        skip_first=bool(t.get("skip_first", True)),
        max_norm=t.get("max_norm"),
    )


@torch.no_grad()
def reconstruction_metrics(
    sae: SparseAutoencoder, store: ActivationStore, rule: RowFilter
) -> dict[str, Any]:
    """Explained variance, L0 and dead fraction over the held-out rows, with per-input sums."""
    site = sae.site
    check_store(store, site, sae.cfg.d_in)
    per: dict[int, list[float]] = {}  # sample -> [rows, sum err^2, sum ||x||^2]
    per_sum: dict[int, Tensor] = {}  # sample -> sum of its rows
    sum_x = torch.zeros(sae.cfg.d_in, dtype=torch.float64)
    sum_x2 = 0.0
    err2 = 0.0
    l0 = 0.0
    n = 0
    fired = torch.zeros(sae.d_sae, dtype=torch.bool)
    for part in store.iter_shards([site]):
        x = part.acts[site]
        mask = rule.keep(x, part.sample, part.position) & rule.held_out(part.sample)
        if not mask.any():
            continue
        x, sample = x[mask].float(), part.sample[mask]
        z = sae.encode(x)
        e = (sae.decode(z) - x).pow(2).sum(-1).double()
        fired |= (z > 0).any(0)
        l0 += float((z > 0).sum())
        sum_x += x.double().sum(0)
        x2 = x.double().pow(2).sum(-1)
        sum_x2 += float(x2.sum())
        err2 += float(e.sum())
        n += len(x)
        for s in sample.unique().tolist():
            m = sample == s
            acc = per.setdefault(int(s), [0.0, 0.0, 0.0])
            acc[0] += float(m.sum())
            acc[1] += float(e[m].sum())
            acc[2] += float(x2[m].sum())
            per_sum[int(s)] = per_sum.get(int(s), 0) + x[m].double().sum(0)
    if n == 0:
        raise SafelabError(
            f"the store at {store.path} has no held-out rows (every {rule.holdout_every}th input): "
            "capture more inputs"
        )
    mean = sum_x / n
    total = sum_x2 - n * float(mean @ mean)
    return {
        "explained_variance": 1 - err2 / total,
        "l0": l0 / n,
        "dead_fraction": 1 - float(fired.float().mean()),
        "heldout_tokens": n,
        "_per_input": (per, per_sum),
    }


def heldout_sequences(store: ActivationStore, rule: RowFilter, max_tokens: int) -> list[list[int]]:
    """Token ids of held-out inputs, rebuilt from the store, up to ``max_tokens`` in all."""
    if store.manifest.position != "all":
        raise SafelabError(
            f"the store at {store.path} was captured at position={store.manifest.position}: "
            "CE-loss recovered needs a position=all store"
        )
    seqs: dict[int, dict[int, int]] = {}
    for part in store.iter_shards(store.sites[:1]):
        held = rule.held_out(part.sample)
        for s, p, t in zip(
            part.sample[held].tolist(),
            part.position[held].tolist(),
            part.token[held].tolist(),
            strict=True,
        ):
            seqs.setdefault(s, {})[p] = t
    out: list[list[int]] = []
    total = 0
    for s in sorted(seqs):
        ids = [seqs[s][p] for p in sorted(seqs[s])]
        if len(ids) < 2:
            continue
        out.append(ids)
        total += len(ids)
        if total >= max_tokens:
            break
    return out


@torch.no_grad()
def ce_losses(
    model: WhiteBoxModel,
    sae: SparseAutoencoder,
    seqs: Sequence[list[int]],
    rule: RowFilter,
    batch_size: int = 8,
) -> np.ndarray:
    """``[n_seqs, 3, 2]``: (summed next-token CE, tokens) clean / SAE-spliced / zero-ablated."""
    out = np.zeros((len(seqs), 3, 2))
    pad = model.tokenizer.pad_token_id
    for lo in range(0, len(seqs), batch_size):
        batch = seqs[lo : lo + batch_size]
        ids, attn = right_pad(batch, pad, model.device)
        width = ids.shape[1]
        pos = torch.arange(width, device=model.device).expand(len(batch), -1)

        def splice(mode: str, pos: Tensor = pos, attn: Tensor = attn) -> Any:
            def fn(t: Tensor) -> Tensor:
                keep = rule.keep(
                    t.reshape(-1, t.shape[-1]).cpu(), pos.flatten().cpu(), pos.flatten().cpu()
                )
                keep = keep.reshape(t.shape[:-1]).to(t.device) & attn.bool()
                new = sae(t.float()).to(t.dtype) if mode == "sae" else torch.zeros_like(t)
                return torch.where(keep[..., None], new, t)

            return fn

        for i, mode in enumerate(("clean", "sae", "zero")):
            fns = {} if mode == "clean" else {sae.site: splice(mode)}
            with model.hooks(fns):
                logits = model.hf(input_ids=ids, attention_mask=attn).logits.float()
            ce = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]),
                ids[:, 1:].reshape(-1),
                reduction="none",
            ).reshape(len(batch), -1)
            valid = attn[:, 1:].bool()
            out[lo : lo + len(batch), i, 0] = (ce * valid).sum(1).cpu().numpy()
            out[lo : lo + len(batch), i, 1] = valid.sum(1).cpu().numpy()
    return out


def evaluate(
    sae: SparseAutoencoder,
    store: ActivationStore,
    model: WhiteBoxModel | None = None,
    *,
    ce_tokens: int = 8192,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    holdout_every: int | None = None,
) -> dict[str, Any]:
    """All metrics (CE recovered only when a model is given), with 95% bootstrap intervals."""
    rule = row_filter(sae, holdout_every)
    rec = reconstruction_metrics(sae, store, rule)
    per, per_sum = rec.pop("_per_input")
    keys = sorted(per)
    rows, err, x2 = np.array([per[k] for k in keys]).T
    sums = torch.stack([per_sum[k] for k in keys]).numpy()
    rng = np.random.default_rng(seed)
    evs = []
    for _ in range(resamples):
        i = rng.integers(0, len(keys), len(keys))
        mean = sums[i].sum(0) / rows[i].sum()
        evs.append(1 - err[i].sum() / (x2[i].sum() - rows[i].sum() * float(mean @ mean)))
    rec["explained_variance_ci"] = [float(np.percentile(evs, 2.5)), float(np.percentile(evs, 97.5))]
    if model is not None:
        sae.check_fits(model)
        seqs = heldout_sequences(store, rule, ce_tokens)
        ce = ce_losses(model, sae, seqs, rule)
        rec.update(_ce_summary(ce, rng, resamples))
    rec["seed"] = seed
    rec["holdout_every"] = rule.holdout_every
    return rec


def _ce_summary(ce: np.ndarray, rng: np.random.Generator, resamples: int) -> dict[str, Any]:
    def recovered(idx: np.ndarray) -> float:
        loss = ce[idx, :, 0].sum(0) / ce[idx, :, 1].sum(0)
        clean, sae, zero = loss
        return float((zero - sae) / (zero - clean)) if zero != clean else float("nan")

    every = np.arange(len(ce))
    boots = [recovered(rng.integers(0, len(ce), len(ce))) for _ in range(resamples)]
    loss = ce[:, :, 0].sum(0) / ce[:, :, 1].sum(0)
    return {
        "ce_clean": float(loss[0]),
        "ce_sae": float(loss[1]),
        "ce_zero": float(loss[2]),
        "ce_recovered": recovered(every),
        "ce_recovered_ci": [
            float(np.nanpercentile(boots, 2.5)),
            float(np.nanpercentile(boots, 97.5)),
        ],
        "ce_tokens": int(ce[:, 0, 1].sum()),
    }
