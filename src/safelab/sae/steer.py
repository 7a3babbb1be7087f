"""An SAE latent as a steering vector: ``FOLDER#1234`` -> the decoder row of latent 1234.

The vector is the unit-norm decoder direction at the SAE's site. Its default scale is the mean
norm of the training activations at that site (``cfg.train["scale"]`` for SAEs safelab
trained; 1 otherwise), so ``scale=1`` adds one typical residual-stream norm along the feature;
``-M steer_scale=`` / ``--scale`` override it as for any steering vector.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import Tensor

from safelab.errors import SafelabError
from safelab.sae.features import check_index
from safelab.sae.formats import load_sae
from safelab.sae.sae import SparseAutoencoder


def parse_feature_ref(text: str) -> tuple[str, int] | None:
    """``"runs/sae/l15#1234"`` -> ``("runs/sae/l15", 1234)``; ``None`` when there is no ``#``."""
    if "#" not in text:
        return None
    folder, _, index = text.rpartition("#")
    if not folder or not index.strip().isdigit():
        raise SafelabError(f"bad SAE feature {text!r}: write FOLDER#INDEX, e.g. runs/sae/l15#1234")
    return folder, int(index)


@dataclass(frozen=True)
class FeatureDirection:
    """A latent's unit decoder row and what a steering vector made from it records.

    :func:`safelab.interp.steering.feature_vector` turns it into a ``SteeringVector`` (this module
    builds on the SAE alone, so that steering, below it, is the only one to import the other).
    """

    direction: Tensor
    site: str
    d_model: int
    model: str
    scale: float
    data: str
    metrics: dict[str, Any] = field(default_factory=dict)


def feature_direction(folder: str | Path | SparseAutoencoder, index: int) -> FeatureDirection:
    """Latent ``index``'s unit decoder row at the SAE's site, with its default scale."""
    sae = folder if isinstance(folder, SparseAutoencoder) else load_sae(folder)
    where = f" at {folder}" if not isinstance(folder, SparseAutoencoder) else ""
    row = sae.W_dec[check_index(sae, index, where)].detach().float()
    norm = float(row.norm())
    if norm == 0:
        raise SafelabError(
            f"feature {index} of the SAE{where} has a zero decoder row: pick another"
        )
    return FeatureDirection(
        direction=row / norm,
        site=sae.site,
        d_model=sae.cfg.d_in,
        model=sae.cfg.model,
        scale=float(sae.cfg.train.get("scale", 1.0)),
        data=f"{folder if not isinstance(folder, SparseAutoencoder) else 'sae'}#{index}",
        metrics={"feature": index, "d_sae": sae.d_sae},
    )
