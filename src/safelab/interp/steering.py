"""Steering vectors: a direction at one site, saved as cfg.json + safetensors.

Made by contrastive activation addition (the mean difference between activations on
behaviour-matching and non-matching examples) or by PCA of the paired differences, and
applied through one owner, :func:`resolve_steer`: ``safelab chat --steer``, ``safelab steer
apply``/``sweep`` and ``-M steer=`` in any Inspect eval all turn a steer spec into a
:class:`SteerSpec` (site, scale and positions from the vector's cfg unless overridden) and apply
it with :meth:`SteerSpec.apply`.

A steer spec is a vector folder or ``.safetensors`` file, or ``FOLDER#INDEX``: feature ``INDEX``
of the sparse autoencoder in ``FOLDER``, resolved by :func:`feature_vector`.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.interp.artifacts import load_artifact, save_artifact
from safelab.models.interventions import StepPositions

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel
    from safelab.sae.sae import SparseAutoencoder

STEER_POSITIONS: tuple[str, ...] = ("all", "last")


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

    @classmethod
    def from_pca(cls, positive: Tensor, negative: Tensor, site: str, **cfg: Any) -> SteeringVector:
        """First principal direction of the paired differences ``positive[i] - negative[i]``.

        Uncentred (as repeng's ``pca_diff``): the top right-singular vector of the difference
        matrix, the direction that the differences agree on most. The component is signed to agree with the mean difference and scaled to the mean
        difference's length along it, so scales are comparable with :meth:`from_contrast`.
        """
        if positive.shape != negative.shape or positive.ndim != 2:
            raise SafelabError("PCA steering needs paired [n, d_model] activations of equal shape")
        if len(positive) < 2:
            raise SafelabError("PCA steering needs at least two pairs")
        diffs = positive.float() - negative.float()
        mean = diffs.mean(0)
        _, _, v = torch.linalg.svd(diffs, full_matrices=False)
        pc = v[0]
        along = float(mean @ pc)
        if along < 0:
            pc, along = -pc, -along
        vector = pc * along
        cfg.setdefault("method", "pca")
        return cls(SteeringConfig(site=site, d_model=int(vector.shape[0]), **cfg), vector)

    def save(self, folder: str | Path) -> Path:
        """Save as ``folder/cfg.json`` + ``folder/vector.safetensors``; returns the weights path."""
        return save_artifact(folder, "vector", self.cfg, {"vector": self.vector})

    @classmethod
    def load(cls, path: str | Path) -> SteeringVector:
        cfg, tensors = load_artifact(path, "vector", SteeringConfig)
        return cls(cfg, tensors["vector"].reshape(-1))


# -- the one owner of "apply a saved vector" ------------------------------------------------


def feature_vector(folder: str | Path | SparseAutoencoder, index: int) -> SteeringVector:
    """SAE latent ``index``'s unit decoder row as a :class:`SteeringVector` at the SAE's site."""
    # Imported here: loading an SAE needs safelab.sae, which sits above interp and never
    # imports this module (the arrow runs one way).
    from safelab.sae.steer import feature_direction

    f = feature_direction(folder, index)
    cfg = SteeringConfig(
        site=f.site,
        d_model=f.d_model,
        method="sae_feature",
        model=f.model,
        scale=f.scale,
        data=f.data,
        metrics=dict(f.metrics),
    )
    return SteeringVector(cfg, f.direction)


def load_steer(spec: str | Path) -> SteeringVector:
    """Parse a steer spec: a vector folder or ``.safetensors``, or ``FOLDER#INDEX`` (SAE feature)."""
    text = str(spec).strip()
    folder, sep, index = text.rpartition("#")
    if sep and folder and index.isdigit():
        return feature_vector(folder, int(index))
    return SteeringVector.load(text)


@dataclass(frozen=True)
class SteerSpec:
    """What to apply: a vector at a site, with a scale and the positions it is added at."""

    vector: SteeringVector
    site: str
    scale: float
    positions: StepPositions

    def apply(self, model: WhiteBoxModel) -> AbstractContextManager[None]:
        """Context manager adding ``scale * vector`` at ``site`` while the block runs."""
        return model.steer(
            self.vector.vector, self.site, scale=self.scale, positions=self.positions
        )

    def record(self) -> dict[str, Any]:
        """What a log says was applied."""
        return {
            "site": self.site,
            "scale": self.scale,
            "positions": self.positions,
            "method": self.vector.cfg.method,
        }


def resolve_steer(
    spec: str | Path | SteeringVector,
    scale: float | None = None,
    positions: str | None = None,
    site: str | None = None,
) -> SteerSpec:
    """The one way a saved vector becomes what is applied.

    Scale, positions and site come from the vector's cfg unless given here.

    Args:
        spec: a steer spec (see :func:`load_steer`) or a vector already in memory.
        scale: override ``cfg.scale``.
        positions: override ``cfg.positions`` (``all`` or ``last``).
        site: override ``cfg.site``.
    """
    vector = spec if isinstance(spec, SteeringVector) else load_steer(spec)
    where = positions or vector.cfg.positions or "all"
    if where not in STEER_POSITIONS:
        raise SafelabError(
            f"unknown steering positions {where!r}: use {' or '.join(STEER_POSITIONS)}"
        )
    return SteerSpec(
        vector=vector,
        site=str(site or vector.site),
        scale=float(vector.cfg.scale if scale is None else scale),
        positions=cast(StepPositions, where),
    )
