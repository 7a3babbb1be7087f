"""A k-sparse probe on SAE latents: the probe's column next to the dense probe.

Encode the activations with the SAE, keep the ``k`` latents whose class means differ most on the
training split (the selection sees no held-out row), fit an L2 logistic regression on those
(standardised), and report the held-out AUROC with a stratified bootstrap interval
(:mod:`safelab.stats`). Few latents that separate the classes make the probe readable:
each one has a feature page.

>>> result = sparse_probe(sae, x_train, y_train, x_test, y_test, k=8)
>>> result.auroc, result.auroc_ci, result.latents
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.stats import DEFAULT_RESAMPLES, auroc, bootstrap_ci


@dataclass
class SparseProbeResult:
    """Held-out AUROC of a logistic probe on ``k`` selected SAE latents."""

    k: int
    latents: list[int]
    """The selected latents, largest absolute class-mean difference first."""
    mean_diff: list[float]
    """Training class-mean difference (positive minus negative) of each selected latent."""
    weights: list[float]
    """Logistic weights on the standardised latents, in ``latents`` order."""
    auroc: float
    auroc_ci: list[float]
    n_train: int
    n_test: int
    seed: int
    n_resamples: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _labels(y: Any, n: int, split: str) -> np.ndarray:
    labels = np.asarray(y).astype(int).ravel()
    if labels.shape[0] != n:
        raise SafelabError(f"{split}: {n} rows but {labels.shape[0]} labels")
    if set(np.unique(labels)) != {0, 1}:
        raise SafelabError(f"{split}: the labels must contain both classes 0 and 1")
    return labels


def select_latents(z: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` latents with the largest absolute class-mean difference, and those differences."""
    diff = z[y == 1].mean(0) - z[y == 0].mean(0)
    order = np.argsort(-np.abs(diff), kind="stable")[:k]
    return order, diff[order]


def fit_sparse_probe(
    z_train: Tensor | np.ndarray,
    y_train: Any,
    z_test: Tensor | np.ndarray,
    y_test: Any,
    *,
    k: int = 8,
    c: float = 1.0,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> SparseProbeResult:
    """Select ``k`` latents on the training split, fit there, and score the held-out split.

    Args:
        z_train: SAE latents ``[n_train, d_sae]``.
        y_train: binary labels of the training rows.
        z_test: SAE latents ``[n_test, d_sae]``.
        y_test: binary labels of the held-out rows.
        k: latents kept (at most ``d_sae``).
        c: inverse L2 strength of the logistic regression.
        seed: of the fit and the bootstrap.
        n_resamples: bootstrap resamples of the AUROC interval.
    """
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    a = np.asarray(torch.as_tensor(z_train).float().cpu().numpy(), dtype=np.float64)
    b = np.asarray(torch.as_tensor(z_test).float().cpu().numpy(), dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise SafelabError(
            f"sparse probe: latents must be [n, d_sae] with the same d_sae, got {a.shape} and "
            f"{b.shape}"
        )
    if not 1 <= k <= a.shape[1]:
        raise SafelabError(f"k={k}: choose between 1 and the SAE's {a.shape[1]} latents")
    ya = _labels(y_train, a.shape[0], "training split")
    yb = _labels(y_test, b.shape[0], "held-out split")
    chosen, diff = select_latents(a, ya, k)
    mean, std = a[:, chosen].mean(0), a[:, chosen].std(0) + 1e-6
    with threadpool_limits(1):
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
        clf.fit((a[:, chosen] - mean) / std, ya)
        scores = clf.decision_function((b[:, chosen] - mean) / std)
    lo, hi = bootstrap_ci(auroc, scores, yb, n_resamples=n_resamples, seed=seed)
    return SparseProbeResult(
        k=k,
        latents=[int(i) for i in chosen],
        mean_diff=[float(v) for v in diff],
        weights=[float(w) for w in clf.coef_[0]],
        auroc=auroc(scores, yb),
        auroc_ci=[lo, hi],
        n_train=int(a.shape[0]),
        n_test=int(b.shape[0]),
        seed=seed,
        n_resamples=n_resamples,
    )


def sparse_probe(
    sae: Any,
    x_train: Tensor,
    y_train: Any,
    x_test: Tensor,
    y_test: Any,
    **kw: Any,
) -> SparseProbeResult:
    """Encode activations ``[n, d_in]`` with ``sae`` and fit :func:`fit_sparse_probe` on them.

    This is the one call ``safelab probe sweep`` needs for its SAE column: the activations are the
    same rows (same site, same position) the dense probe is fitted on.
    """
    d_in = int(sae.cfg.d_in)
    for name, x in (("training", x_train), ("held-out", x_test)):
        if x.shape[-1] != d_in:
            raise SafelabError(
                f"{name} activations have width {x.shape[-1]} but the SAE at {sae.cfg.site} "
                f"reads d_in={d_in}: use an SAE trained at the probe's site on the same model"
            )
    with torch.inference_mode():
        z_train = sae.encode(x_train.float())
        z_test = sae.encode(x_test.float())
    return fit_sparse_probe(z_train, y_train, z_test, y_test, **kw)
