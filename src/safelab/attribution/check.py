"""Does the graph predict interventions on the real model? Ablate its top features and compare.

For each prompt, the graph's top features (kept by pruning, largest total effect on the target
logit) are ablated one at a time **in the original model**: the feature's contribution ``a *
W_dec[f]`` is subtracted from ``blocks.L.mlp_out`` at its position, and everything downstream is
recomputed for real (attention patterns, norms, the true MLPs). The measured change of the
target's demeaned logit is compared with two predictions from the graph: the total effect
through the graph (``-H_s``, see :func:`safelab.attribution.graph.total_effects`) and the direct
edge alone (``-A[logit, s]``). Pearson and Spearman correlations come with 95% bootstrap
intervals over prompts (each resample draws whole prompts, seed recorded).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from safelab.attribution.graph import Graph
    from safelab.models.whitebox import WhiteBoxModel
    from safelab.transcoders.transcoder import TranscoderSet


@dataclass(frozen=True)
class Case:
    """A prompt and its target token (a single token of the model's vocabulary)."""

    prompt: str
    target: str
    source: str = ""


@dataclass
class Intervention:
    prompt: int
    node_id: str
    activation: float
    predicted_total: float
    predicted_direct: float
    measured: float


@dataclass
class CheckResult:
    interventions: list[Intervention] = field(default_factory=list)
    graphs: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


def demeaned_logit(logits: Tensor, target: int) -> float:
    return float(logits[target] - logits.mean())


@torch.no_grad()
def ablate_feature(
    model: WhiteBoxModel,
    ids: Tensor,
    transcoders: TranscoderSet,
    layer: int,
    pos: int,
    feat: int,
    act: float,
    target: int,
    scale: float = 0.0,
) -> float:
    """Change of the demeaned target logit when the feature's output is set to ``scale`` times
    its value (0: ablated) in the real model."""
    vec = (scale - 1.0) * act * transcoders[layer].W_dec[feat]

    def edit(t: Tensor) -> Tensor:
        out = t.clone()
        out[:, pos] += vec.to(t.dtype).to(t.device)
        return out

    clean = model.hf(input_ids=ids[None].to(model.device)).logits[0, -1].float()
    with model.hooks({f"blocks.{layer}.mlp_out": edit}):
        edited = model.hf(input_ids=ids[None].to(model.device)).logits[0, -1].float()
    return demeaned_logit(edited, target) - demeaned_logit(clean, target)


def check_graph(
    model: WhiteBoxModel,
    transcoders: TranscoderSet,
    ids: Tensor,
    graph: Graph,
    node_mask: Tensor,
    prompt_index: int,
    top: int = 5,
) -> list[Intervention]:
    """Ablate the ``top`` kept features with the largest |total effect|; predicted vs measured."""
    from safelab.attribution.graph import total_effects

    h = total_effects(graph)
    # the kept features first (by |total effect|), then the other visited ones
    order = sorted(
        range(graph.n_features), key=lambda i: (not bool(node_mask[i]), -abs(float(h[i])))
    )
    kept = order
    target = int(graph.logit_tokens[0])
    out = []
    for i in kept[:top]:
        layer, pos, feat, act = graph.feature(i)
        measured = ablate_feature(model, ids, transcoders, layer, pos, feat, act, target)
        out.append(
            Intervention(
                prompt=prompt_index,
                node_id=f"{layer}_{feat}_{pos}",
                activation=act,
                predicted_total=-float(h[i]),
                predicted_direct=-float(graph.adjacency_matrix[-1, i]),
                measured=measured,
            )
        )
    return out


def correlation_stats(
    rows: Sequence[Intervention], resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Pearson/Spearman of predicted vs measured, 95% bootstrap intervals over prompts."""
    from scipy.stats import pearsonr, spearmanr

    prompts = sorted({r.prompt for r in rows})
    by = {p: [r for r in rows if r.prompt == p] for p in prompts}
    rng = np.random.default_rng(seed)

    def stats(sample: Sequence[Intervention], key: str) -> tuple[float, float]:
        x = np.array([getattr(r, key) for r in sample])
        y = np.array([r.measured for r in sample])
        if len(x) < 3 or x.std() == 0 or y.std() == 0:
            return float("nan"), float("nan")
        return float(pearsonr(x, y)[0]), float(spearmanr(x, y)[0])

    out: dict[str, Any] = {"n_interventions": len(rows), "n_prompts": len(prompts), "seed": seed}
    for key in ("predicted_total", "predicted_direct"):
        p, s = stats(rows, key)
        boots = []
        for _ in range(resamples):
            pick = rng.integers(0, len(prompts), len(prompts))
            boots.append(stats([r for i in pick for r in by[prompts[i]]], key))
        b = np.array(boots)
        name = key.replace("predicted_", "")
        out[f"{name}_pearson"] = p
        out[f"{name}_pearson_ci"] = [
            float(np.nanpercentile(b[:, 0], 2.5)),
            float(np.nanpercentile(b[:, 0], 97.5)),
        ]
        out[f"{name}_spearman"] = s
        out[f"{name}_spearman_ci"] = [
            float(np.nanpercentile(b[:, 1], 2.5)),
            float(np.nanpercentile(b[:, 1], 97.5)),
        ]
        sign = [np.sign(getattr(r, key)) == np.sign(r.measured) for r in rows if r.measured != 0]
        out[f"{name}_sign_agreement"] = float(np.mean(sign)) if sign else float("nan")
    meas = np.array([r.measured for r in rows])
    pred = np.array([r.predicted_total for r in rows])
    out["mean_abs_measured"] = float(np.abs(meas).mean()) if len(meas) else float("nan")
    out["mean_abs_predicted_total"] = float(np.abs(pred).mean()) if len(pred) else float("nan")
    if len(meas) > 1 and (pred**2).sum() > 0:
        out["slope_measured_on_predicted"] = float((pred * meas).sum() / (pred**2).sum())
    return out
