"""Each graph feature's top-activating contexts, read from the transcoders' activation store.

The store that trained the transcoders holds every layer's MLP input for every token, with the
token ids: a feature's activation on each stored token is one matmul, and the windows around its
strongest tokens are rebuilt from the ids (the first token of each input, which the transcoders
skip, never counts; held-out and training inputs both do).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from safelab.interp.store import ActivationStore
from safelab.transcoders.transcoder import TranscoderSet

WINDOW = 8


@torch.no_grad()
def top_contexts(
    store: ActivationStore,
    transcoders: TranscoderSet,
    tokenizer: Any,
    features: Sequence[tuple[int, int]],
    top: int = 5,
    window: int = WINDOW,
) -> dict[tuple[int, int], list[dict[str, Any]]]:
    """``{(layer, feature): [{"tokens", "acts", "max"}, ...]}`` for the ``top`` strongest tokens."""
    by_layer: dict[int, list[int]] = {}
    for layer, feat in features:
        by_layer.setdefault(layer, []).append(feat)
    best: dict[tuple[int, int], list[tuple[float, int, int]]] = {f: [] for f in features}
    for layer, feats in sorted(by_layer.items()):
        site = f"blocks.{layer}.mlp_in"
        if site not in store.sites:
            continue
        tc = transcoders[layer]
        cols = torch.tensor(sorted(set(feats)))
        w, b, thr = tc.W_enc[:, cols], tc.b_enc[cols], tc.threshold[cols]
        for part in store.iter_shards([site]):
            pre = part.acts[site].float() @ w + b
            act = torch.relu(pre) * (pre > thr)
            act[part.position == 0] = 0
            k = min(top, len(act))
            vals, rows = act.topk(k, dim=0)
            for j, feat in enumerate(cols.tolist()):
                for v, r in zip(vals[:, j].tolist(), rows[:, j].tolist(), strict=True):
                    if v > 0:
                        best[(layer, feat)].append((v, int(part.sample[r]), int(part.position[r])))
    wanted: dict[int, set[int]] = {}
    for key in best:
        best[key] = sorted(best[key], reverse=True)[:top]
        for _, s, p in best[key]:
            wanted.setdefault(s, set()).update(range(max(0, p - window), p + 2))
    tokens = _tokens(store, wanted)
    out: dict[tuple[int, int], list[dict[str, Any]]] = {}
    for (layer, feat), hits in best.items():
        ctxs = []
        tc = transcoders[layer]
        for v, s, p in hits:
            span = [q for q in range(max(0, p - window), p + 2) if (s, q) in tokens]
            ctxs.append(
                {
                    "tokens": [tokenizer.decode([tokens[(s, q)]]) for q in span],
                    "focus": span.index(p) if p in span else len(span) - 1,
                    "max": round(v, 4),
                }
            )
        del tc
        out[(layer, feat)] = ctxs
    return out


def _tokens(store: ActivationStore, wanted: dict[int, set[int]]) -> dict[tuple[int, int], int]:
    site = store.sites[0]
    got: dict[tuple[int, int], int] = {}
    if not wanted:
        return got
    for part in store.iter_shards([site]):
        for s, p, t in zip(
            part.sample.tolist(), part.position.tolist(), part.token.tolist(), strict=True
        ):
            if s in wanted and p in wanted[s]:
                got[(s, p)] = t
    return got
