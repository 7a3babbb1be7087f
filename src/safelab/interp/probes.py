"""Linear probes on activations: fit, score per token, save as cfg.json + safetensors.

A probe is a direction ``w`` and bias ``b`` at one site: ``p(label=1 | x) = sigmoid(w·x + b)``.
Standardisation learnt at fit time is folded into ``w`` and ``b``, so scoring is one matmul.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.interp.artifacts import load_artifact, save_artifact

if TYPE_CHECKING:
    from safelab.models.capture import Input
    from safelab.models.whitebox import WhiteBoxModel

ProbeMethod = Literal["logistic", "mass_mean"]


@dataclass
class ProbeConfig:
    """Everything needed to reuse a probe; also its saved metadata."""

    site: str
    d_model: int
    position: str = "last"
    """The read position the probe was trained at (``last``, ``response``, ``all``, an index)."""
    method: str = "logistic"
    model: str = ""
    data: str = ""
    """What it was trained on (a path or a data set name)."""
    data_hash: str = ""
    seed: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


class LinearProbe:
    """A linear probe at one site; ``score`` gives the probability of the positive label."""

    def __init__(self, cfg: ProbeConfig, weight: Tensor, bias: float) -> None:
        if weight.shape != (cfg.d_model,):
            raise SafelabError(
                f"probe weight has shape {tuple(weight.shape)}, expected ({cfg.d_model},)"
            )
        self.cfg = cfg
        self.weight = weight.float()
        self.bias = float(bias)

    def __repr__(self) -> str:
        return f"LinearProbe(site={self.cfg.site!r}, method={self.cfg.method!r}, model={self.cfg.model!r})"

    @property
    def site(self) -> str:
        return self.cfg.site

    def logit(self, acts: Tensor) -> Tensor:
        """``w·x + b`` for activations ``[..., d_model]``."""
        return acts.float() @ self.weight.to(acts.device) + self.bias

    def score(self, acts: Tensor) -> Tensor:
        """Probability of the positive label for activations ``[..., d_model]``."""
        return torch.sigmoid(self.logit(acts))

    @classmethod
    def fit(
        cls,
        acts: Tensor | np.ndarray,
        labels: Tensor | np.ndarray | list[int],
        site: str,
        *,
        method: ProbeMethod = "logistic",
        c: float = 1.0,
        seed: int = 0,
        **cfg: Any,
    ) -> LinearProbe:
        """Fit on ``acts [n, d]`` with binary ``labels [n]``.

        ``logistic`` is scikit-learn's L2 logistic regression on standardised activations;
        ``mass_mean`` is the difference of class means (Marks & Tegmark), calibrated by a
        one-dimensional logistic fit along it.
        """
        from threadpoolctl import threadpool_limits

        x = np.asarray(torch.as_tensor(acts).float().cpu().numpy(), dtype=np.float64)
        y = np.asarray(labels).astype(int).ravel()
        if x.ndim != 2 or x.shape[0] != y.shape[0]:
            raise SafelabError(
                f"probe data mismatch: {x.shape[0]} activation rows, {y.shape[0]} labels"
            )
        if set(np.unique(y)) != {0, 1}:
            raise SafelabError("probe labels must contain both classes 0 and 1")
        mean, std = x.mean(0), x.std(0) + 1e-6
        z = (x - mean) / std
        # One BLAS thread: these fits are small, and a thread pool on shared cores is ~20x slower.
        with threadpool_limits(1):
            w_z, b_z = _fit_standardised(z, y, method, c, seed)
        weight = w_z / std
        bias = b_z - float(weight @ mean)
        config = ProbeConfig(site=site, d_model=x.shape[1], method=method, seed=seed, **cfg)
        if not config.data_hash:
            config.data_hash = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()[:16]
        return cls(config, torch.tensor(weight, dtype=torch.float32), bias)

    def save(self, folder: str | Path) -> Path:
        """Save as ``folder/cfg.json`` + ``folder/probe.safetensors``; returns the weights path."""
        return save_artifact(
            folder, "probe", self.cfg, {"weight": self.weight, "bias": torch.tensor([self.bias])}
        )

    @classmethod
    def load(cls, path: str | Path) -> LinearProbe:
        """Load from a probe folder or its ``probe.safetensors``."""
        cfg, tensors = load_artifact(path, "probe", ProbeConfig)
        return cls(cfg, tensors["weight"], float(tensors["bias"].reshape(-1)[0]))


def _fit_standardised(
    z: np.ndarray, y: np.ndarray, method: str, c: float, seed: int
) -> tuple[np.ndarray, float]:
    from sklearn.linear_model import LogisticRegression

    if method == "logistic":
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        clf.fit(z, y)
        return clf.coef_[0], float(clf.intercept_[0])
    if method == "mass_mean":
        direction = z[y == 1].mean(0) - z[y == 0].mean(0)
        proj = (z @ direction)[:, None]
        clf = LogisticRegression(C=1e6, max_iter=2000, random_state=seed).fit(proj, y)
        return direction * clf.coef_[0, 0], float(clf.intercept_[0])
    raise SafelabError(f"unknown probe method {method!r}: use logistic or mass_mean")


def score_tokens(
    model: WhiteBoxModel, probe: LinearProbe, inputs: Sequence[Input], batch_size: int = 16
) -> list[dict[str, Any]]:
    """A probe score for every token of each text or chat: ``[{"tokens", "scores", "mean", "max"}]``."""
    acts = model.capture(inputs, probe.site, position="all", batch_size=batch_size)
    out = []
    for i in range(len(inputs)):
        sel = acts.sample == i
        scores = probe.score(acts[probe.site][sel]).tolist()
        tokens = [model.tokenizer.decode([t]) for t in acts.token[sel].tolist()]
        out.append(
            {
                "tokens": tokens,
                "scores": [round(s, 5) for s in scores],
                "mean": float(np.mean(scores)),
                "max": float(np.max(scores)),
                "last": float(scores[-1]),
            }
        )
    return out
