"""Rows of an activation store for SAE training and evaluation, one shard in memory at a time.

Two rules decide which rows an SAE sees, the same in training and in every metric:

- **held out**: rows of inputs with ``sample % holdout_every == 0`` are never trained on; the
  metrics read only those;
- **skipped**: the first token of each input (``position == 0``: the attention sink, whose
  residual norm on the default model is ~100x a typical token's) and any row whose norm exceeds
  ``max_norm_ratio`` times the median norm (the rare "massive activations"; at layer 15 of the
  default model one token in ~20k carries a quarter of the variance). The SAE leaves these
  positions alone: when spliced into the model they keep their clean activation.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.interp.store import ActivationStore


@dataclass(frozen=True)
class RowFilter:
    """Which rows of a store count (see the module docstring)."""

    holdout_every: int = 20
    skip_first: bool = True
    max_norm: float | None = None
    """Absolute norm cap (``max_norm_ratio`` times the median norm, fixed once per store)."""

    def keep(self, x: Tensor, sample: Tensor, position: Tensor) -> Tensor:
        """Boolean mask of rows that are neither the first token nor a massive activation."""
        mask = torch.ones(len(sample), dtype=torch.bool)
        if self.skip_first:
            mask &= position > 0
        if self.max_norm is not None:
            mask &= x.float().norm(dim=-1) <= self.max_norm
        return mask

    def held_out(self, sample: Tensor) -> Tensor:
        if self.holdout_every <= 0:
            return torch.zeros(len(sample), dtype=torch.bool)
        return sample % self.holdout_every == 0


def check_store(store: ActivationStore, site: str, d_in: int | None = None) -> None:
    """Raise one line if the store lacks ``site`` or its width is not ``d_in``."""
    if site not in store.sites:
        raise SafelabError(
            f"the store at {store.path} has no site {site} (it has {', '.join(store.sites)}): "
            "capture that site or choose a store of it"
        )
    if d_in is not None and store.manifest.d_model != d_in:
        raise SafelabError(
            f"the store at {store.path} has d_model {store.manifest.d_model} but the SAE reads "
            f"{d_in}: use a store captured from the SAE's model"
        )
    if not store.manifest.shards:
        raise SafelabError(f"the store at {store.path} has no rows yet: capture first")


def median_norm(store: ActivationStore, site: str, rows: int = 20_000) -> float:
    """Median row norm over the first ``rows`` non-first-token rows (to place the norm cap)."""
    norms: list[Tensor] = []
    n = 0
    for part in store.iter_shards([site]):
        keep = part.position > 0
        norms.append(part.acts[site][keep].float().norm(dim=-1))
        n += int(keep.sum())
        if n >= rows:
            break
    return float(torch.cat(norms)[:rows].median())


def train_rows(
    store: ActivationStore, site: str, rule: RowFilter, seed: int, epoch: int
) -> Iterator[Tensor]:
    """Training rows (float32, ``[n, d]`` chunks), shards and rows shuffled by ``(seed, epoch)``."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    order = torch.randperm(len(store.manifest.shards), generator=g).tolist()
    shards = list(store.manifest.shards)
    for i in order:
        part = _read_shard(store, shards[i]["file"], site)
        x, sample, position = part
        mask = rule.keep(x, sample, position) & ~rule.held_out(sample)
        rows = x[mask].float()
        yield rows[torch.randperm(len(rows), generator=g)]


def batches(
    store: ActivationStore, site: str, rule: RowFilter, batch_size: int, seed: int
) -> Iterator[Tensor]:
    """An endless stream of ``[batch_size, d]`` training batches, epoch after epoch."""
    epoch = 0
    carry = torch.empty(0)
    while True:
        got = False
        for rows in train_rows(store, site, rule, seed, epoch):
            got = got or len(rows) > 0
            buf = torch.cat([carry, rows]) if len(carry) else rows
            n_full = len(buf) // batch_size
            for b in range(n_full):
                yield buf[b * batch_size : (b + 1) * batch_size]
            carry = buf[n_full * batch_size :]
        if not got:
            raise SafelabError(
                f"the store at {store.path} has no training rows for {site} after holding out "
                "and skipping: capture more inputs"
            )
        epoch += 1


def _read_shard(store: ActivationStore, name: str, site: str) -> tuple[Tensor, Tensor, Tensor]:
    from safetensors import safe_open

    try:
        with safe_open(str(store.path / name), framework="pt") as f:
            return f.get_tensor(site), f.get_tensor("sample"), f.get_tensor("position")
    except Exception as e:
        raise SafelabError(
            f"{store.path / name} is not a readable store shard ({str(e)[:80]}): capture again"
        ) from None
