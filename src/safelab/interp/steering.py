"""Steering vectors: a direction at one site, saved as cfg.json + safetensors.

Made by contrastive activation addition (the mean difference between activations on
behaviour-matching and non-matching examples) and applied with
:func:`safelab.interp.interventions.steer` or ``-M steer=`` in any Inspect eval.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from safelab.errors import SafelabError
from safelab.interp.artifacts import load_artifact, save_artifact


@dataclass
class SteeringConfig:
    site: str
    d_model: int
    method: str = "mean_diff"
    model: str = ""
    scale: float = 1.0
    """The scale the vector was tuned for; ``-M steer_scale=`` overrides it."""
    positions: str = "all"
    data: str = ""
    seed: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)


class SteeringVector:
    def __init__(self, cfg: SteeringConfig, vector: Tensor) -> None:
        if vector.shape != (cfg.d_model,):
            raise SafelabError(
                f"steering vector has shape {tuple(vector.shape)}, expected ({cfg.d_model},)"
            )
        self.cfg = cfg
        self.vector = vector.float()

    def __repr__(self) -> str:
        return f"SteeringVector(site={self.cfg.site!r}, norm={self.vector.norm():.3g}, model={self.cfg.model!r})"

    @property
    def site(self) -> str:
        return self.cfg.site

    @classmethod
    def from_contrast(
        cls, positive: Tensor, negative: Tensor, site: str, **cfg: Any
    ) -> SteeringVector:
        """Mean difference ``mean(positive) - mean(negative)`` of ``[n, d]`` activations."""
        if positive.ndim != 2 or negative.ndim != 2 or positive.shape[1] != negative.shape[1]:
            raise SafelabError("contrast activations must be [n, d_model] with the same d_model")
        if len(positive) == 0 or len(negative) == 0:
            raise SafelabError("contrast needs at least one positive and one negative example")
        vector = positive.float().mean(0) - negative.float().mean(0)
        return cls(SteeringConfig(site=site, d_model=int(vector.shape[0]), **cfg), vector)

    def save(self, folder: str | Path) -> Path:
        return save_artifact(folder, "vector", self.cfg, {"vector": self.vector})

    @classmethod
    def load(cls, path: str | Path) -> SteeringVector:
        cfg, tensors = load_artifact(path, "vector", SteeringConfig)
        return cls(cfg, tensors["vector"].reshape(-1))
