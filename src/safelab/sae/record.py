"""Top active SAE features per token, as JSON-able records (for sample metadata and logs)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.sae.sae import SparseAutoencoder


@torch.no_grad()
def top_features(
    sae: SparseAutoencoder,
    acts: Tensor,
    k: int = 5,
    tokens: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """For each row of ``acts`` (``[tokens, d_in]``), its ``k`` most active latents.

    Returns ``[{"position": p, "token": str (when given), "features": [[index, activation],
    ...]}]``, strongest first, inactive latents left out (so a token may list fewer than ``k``).
    """
    if acts.ndim != 2 or acts.shape[-1] != sae.cfg.d_in:
        raise SafelabError(
            f"activations of shape {tuple(acts.shape)} do not fit the SAE (d_in={sae.cfg.d_in}): "
            f"give [tokens, {sae.cfg.d_in}] from site {sae.site}"
        )
    if tokens is not None and len(tokens) != len(acts):
        raise SafelabError(f"{len(tokens)} tokens for {len(acts)} activation rows")
    z = sae.encode(acts.float())
    top = z.topk(min(k, sae.d_sae), dim=-1)
    out: list[dict[str, Any]] = []
    for p, (vals, idx) in enumerate(zip(top.values.tolist(), top.indices.tolist(), strict=True)):
        rec: dict[str, Any] = {"position": p}
        if tokens is not None:
            rec["token"] = tokens[p]
        rec["features"] = [
            [int(i), round(float(v), 4)] for v, i in zip(vals, idx, strict=True) if v > 0
        ]
        out.append(rec)
    return out
