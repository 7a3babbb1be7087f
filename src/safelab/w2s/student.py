"""The strong student: a linear head on the strong model's cached activations, trained with torch.

The features are the strong model's activations at one site (read at the last token or
averaged over the text's tokens; captured once into the activation cache), standardised with
the training rows' mean and spread. The head is ``logit = w·x + b``, trained with Adam on
minibatches against soft labels (weak labels for the student, ground truth for the ceiling)
with one of the losses in :mod:`safelab.w2s.losses`. A seed fixes the initial weights and the
minibatch order.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.w2s.losses import LossConfig


@dataclass
class StudentConfig:
    """How the linear head is trained."""

    epochs: int = 10
    """Passes over the training rows, no early stopping. 10 at lr 1e-3 was picked by the
    ceiling's accuracy on a held-out quarter of strong-train (truth-cities, mwe-power), never
    by test accuracy or PGR."""
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0:
            raise SafelabError(
                f"student config {self}: epochs and batch_size must be >= 1 and lr > 0"
            )


@dataclass
class LinearHead:
    """A trained head: ``p = sigmoid(w·((x - mean) / std) + b)``."""

    weight: Tensor
    bias: Tensor
    mean: Tensor
    std: Tensor

    def logits(self, x: Tensor) -> Tensor:
        z = (x.float() - self.mean) / self.std
        return z @ self.weight + self.bias

    def probs(self, x: Tensor) -> np.ndarray:
        with torch.no_grad():
            return torch.sigmoid(self.logits(x)).double().numpy()


def train_head(
    x: Tensor,
    targets: Sequence[float] | np.ndarray,
    loss: LossConfig,
    cfg: StudentConfig,
    seed: int,
) -> LinearHead:
    """Fit a linear head on ``x [n, d]`` against soft ``targets [n]`` in ``[0, 1]``."""
    y = torch.as_tensor(np.asarray(targets, dtype=np.float32))
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise SafelabError(f"student data mismatch: {x.shape[0]} rows, {y.shape[0]} labels")
    if not torch.isfinite(y).all() or (y < 0).any() or (y > 1).any():
        raise SafelabError("student targets must be probabilities in [0, 1]")
    x = x.float()
    mean = x.mean(0)
    std = x.std(0) + 1e-6
    z = (x - mean) / std
    gen = torch.Generator().manual_seed(seed)
    d = x.shape[1]
    weight = (torch.randn(d, generator=gen) / d**0.5).requires_grad_(True)
    bias = torch.zeros((), requires_grad=True)
    opt = torch.optim.Adam([weight, bias], lr=cfg.lr, weight_decay=cfg.weight_decay)
    n = x.shape[0]
    steps_per_epoch = (n + cfg.batch_size - 1) // cfg.batch_size
    total = cfg.epochs * steps_per_epoch
    step = 0
    with torch.enable_grad():
        for _ in range(cfg.epochs):
            order = torch.randperm(n, generator=gen)
            for lo in range(0, n, cfg.batch_size):
                idx = order[lo : lo + cfg.batch_size]
                logits = z[idx] @ weight + bias
                value = loss(logits, y[idx], step / total)
                opt.zero_grad()
                value.backward()
                opt.step()
                step += 1
    return LinearHead(weight.detach().clone(), bias.detach().clone(), mean, std)
