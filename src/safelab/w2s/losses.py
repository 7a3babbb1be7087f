"""Training losses for the student: plain cross-entropy and Burns et al.'s auxiliary confidence loss.

Both take the student's logits (one per item, ``p = sigmoid(logit)``) and soft weak labels in
``[0, 1]``. The auxiliary confidence loss (Burns et al. 2023, section 4.3.2) is

    L = (1 - a) * CE(f, weak) + a * CE(f, hardened f)

where ``hardened f`` is the student's own prediction made hard at a threshold chosen so that the
share of hardened positives equals the weak labels' mean (the class balance the supervisor
asserts), and ``a`` rises linearly from 0 to ``aux_coef`` over the first ``warmup_frac`` of
training. The hardened labels are targets (no gradient flows through them). Because
cross-entropy is linear in its target, this equals one cross-entropy against the mixed target
``(1 - a) * weak + a * hardened``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from safelab.errors import SafelabError

LOSSES = ("xent", "aux")


def xent(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean binary cross-entropy of ``sigmoid(logits)`` against soft ``targets``."""
    return F.binary_cross_entropy_with_logits(logits.float(), targets.float())


def harden(probs: Tensor, positive_share: float) -> Tensor:
    """0/1 labels: the top ``positive_share`` of ``probs`` become 1 (ties broken by order).

    The threshold is the ``1 - positive_share`` quantile of the batch's probabilities, so the
    hardened labels match the weak labels' class balance rather than a fixed 0.5 cut.
    """
    if not 0.0 <= positive_share <= 1.0:
        raise SafelabError(f"positive share must be in [0, 1], got {positive_share}")
    n = probs.shape[0]
    k = round(positive_share * n)
    out = torch.zeros_like(probs, dtype=torch.float32)
    if k > 0:
        top = torch.topk(probs.detach().float(), k).indices
        out[top] = 1.0
    return out


def aux_weight(step_frac: float, aux_coef: float = 0.5, warmup_frac: float = 0.2) -> float:
    """``a`` at ``step_frac`` of training: linear from 0 to ``aux_coef`` over ``warmup_frac``."""
    if warmup_frac <= 0:
        return aux_coef
    return aux_coef * min(1.0, max(0.0, step_frac) / warmup_frac)


def aux_confidence(logits: Tensor, weak: Tensor, a: float) -> Tensor:
    """``(1 - a) CE(f, weak) + a CE(f, hardened f)`` for one batch."""
    hardened = harden(torch.sigmoid(logits.detach()), float(weak.float().mean()))
    return (1 - a) * xent(logits, weak) + a * xent(logits, hardened)


@dataclass
class LossConfig:
    """Which loss, and the auxiliary loss's schedule (ignored by ``xent``)."""

    name: str = "xent"
    aux_coef: float = 0.5
    """The final weight ``a`` of the hardened-self term (Burns et al. use 0.5 to 0.75)."""
    warmup_frac: float = 0.2
    """Share of training steps over which ``a`` rises from 0 to ``aux_coef``."""

    def __post_init__(self) -> None:
        if self.name not in LOSSES:
            raise SafelabError(f"unknown loss {self.name!r}: use {' or '.join(LOSSES)}")
        if not 0.0 <= self.aux_coef <= 1.0:
            raise SafelabError(f"aux_coef must be in [0, 1], got {self.aux_coef}")

    def __call__(self, logits: Tensor, weak: Tensor, step_frac: float) -> Tensor:
        if self.name == "xent":
            return xent(logits, weak)
        return aux_confidence(logits, weak, aux_weight(step_frac, self.aux_coef, self.warmup_frac))
