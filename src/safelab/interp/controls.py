"""Controls that say whether a probe knows more than chance, the words, or the read token.

Every probe sweep reports, on the same split as the probe:

- a **shuffled-label control** per site: the same probe fitted on seeded random training
  labels (same class balance, uncorrelated with the true labels: :func:`shuffled_labels`),
  averaged over three draws; it should sit near 0.5, and a probe that does no better has learnt
  nothing about the labels;
- a **bag-of-words baseline**: TF-IDF of the texts' words and bigrams and a logistic
  regression (scikit-learn), i.e. what the surface words alone predict;
- a **token-embedding baseline**: a probe on the input embedding of the read token (the mean
  over the read span for ``mean``), i.e. what the model "knows" before any layer.

:func:`flags` turns them into warnings (definitions in its docstring and docs/probes.md).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from safelab.interp.probes import LinearProbe, ProbeMethod
from safelab.stats import DEFAULT_RESAMPLES, DetectorMetrics, detector_metrics

if TYPE_CHECKING:
    from safelab.interp.contrast import ContrastSet
    from safelab.models.whitebox import WhiteBoxModel

N_SHUFFLES = 3


def shuffled_labels(labels: np.ndarray, seed: int) -> np.ndarray:
    """Seeded random control labels with the same class balance and no correlation with ``labels``.

    A plain permutation keeps a chance correlation of about ``1/sqrt(n)`` with the true labels;
    when one direction carries most of the variance (truth, from layer 10 on), a mass-mean probe
    picks up that correlation's sign and the "control" lands far from 0.5 (0.16 on ``cities``).
    So each true class gets the same share of positive control labels, at random rows.
    """
    rng = np.random.default_rng(seed + 7919)
    y = np.asarray(labels).astype(int)
    out = np.zeros_like(y)
    share = y.mean()
    for c in (0, 1):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        out[idx[: round(share * len(idx))]] = 1
    if len(set(out.tolist())) < 2:  # tiny splits: fall back to a permutation
        out = rng.permutation(y)
    return out


def shuffled_control(
    x: Tensor,
    labels: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    site: str,
    *,
    method: ProbeMethod = "logistic",
    c: float = 1.0,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    n_shuffles: int = N_SHUFFLES,
) -> tuple[float, list[float]]:
    """Held-out AUROC of probes fitted on shuffled training labels at ``site``.

    One shuffle is one random direction; where truth carries most of the variance, its small
    random component along truth moves a single draw's AUROC far from 0.5 either way. So the
    control is ``n_shuffles`` seeded draws: the mean AUROC, and as its interval the envelope of
    the draws' 95% bootstrap intervals (lowest lower bound, highest upper bound).
    """
    aurocs, los, his = [], [], []
    for k in range(n_shuffles):
        probe = LinearProbe.fit(
            x[train],
            shuffled_labels(labels[train], seed + 1000 * k),
            site,
            method=method,
            c=c,
            seed=seed,
        )
        scores = probe.score(x[test]).numpy()
        m = detector_metrics(scores, labels[test], n_resamples=n_resamples, seed=seed)
        aurocs.append(m.auroc)
        los.append(m.auroc_ci[0])
        his.append(m.auroc_ci[1])
    return float(np.mean(aurocs)), [float(min(los)), float(max(his))]


def example_texts(data: ContrastSet) -> list[str]:
    """What a reader of the data sees per example: the prompt (if any) and the text."""
    return [f"{e.prompt}\n{e.text}" if e.prompt else e.text for e in data.examples]


def bag_of_words(
    texts: Sequence[str],
    labels: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> DetectorMetrics:
    """Held-out metrics of TF-IDF (words and bigrams) + L2 logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    vec = TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True)
    x_train = vec.fit_transform([texts[i] for i in train])
    x_test = vec.transform([texts[i] for i in test])
    with threadpool_limits(1):
        clf = LogisticRegression(C=1.0, max_iter=1000, random_state=seed)
        clf.fit(x_train, labels[train])
        scores = clf.predict_proba(x_test)[:, 1]
    return detector_metrics(scores, labels[test], n_resamples=n_resamples, seed=seed)


def token_embeddings(model: WhiteBoxModel, data: ContrastSet) -> Tensor:
    """``[n, d_model]`` input embeddings at each example's read position (no layer applied)."""
    table = model.hf.get_input_embeddings().weight.detach()
    rows = []
    for enc in data.encode(model):
        ids = torch.tensor(enc.ids, dtype=torch.long, device=table.device)
        if data.position == "mean":
            lo, hi = enc.response or (0, len(enc.ids))
            rows.append(table[ids[lo:hi]].float().mean(0))
        elif data.position == "last":
            rows.append(table[ids[-1]].float())
        else:
            rows.append(table[ids[int(data.position)]].float())
    return torch.stack(rows).cpu()


def embedding_baseline(
    emb: Tensor,
    labels: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    *,
    method: ProbeMethod = "logistic",
    c: float = 1.0,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
) -> DetectorMetrics:
    """Held-out metrics of the same probe type on the read token's input embedding."""
    probe = LinearProbe.fit(emb[train], labels[train], "embed", method=method, c=c, seed=seed)
    scores = probe.score(emb[test]).numpy()
    return detector_metrics(scores, labels[test], n_resamples=n_resamples, seed=seed)


def site_flags(auroc_ci: Sequence[float], control_auroc: float | None) -> list[str]:
    """``below_chance`` (interval entirely under 0.5) and ``not_above_shuffled_control``."""
    out = []
    if auroc_ci[1] < 0.5:
        out.append("below_chance")
    if control_auroc is not None and auroc_ci[0] <= control_auroc:
        out.append("not_above_shuffled_control")
    return out


def flags(
    best_site: str,
    best_ci: Sequence[float],
    site_flag_lists: Mapping[str, Sequence[str]],
    baselines: Mapping[str, Mapping[str, Any]],
) -> list[dict[str, str]]:
    """Warnings about a sweep, each ``{"flag", "message"}``.

    Definitions (a probe is "no better than" a control when its 95% interval's lower bound is at
    or below the control's point estimate, i.e. the interval reaches the control):

    - ``best_below_chance``: the best site's AUROC interval lies entirely below 0.5;
    - ``best_not_above_shuffled_control``: the best site's lower bound <= its shuffled control;
    - ``best_not_above_<baseline>``: the best site's lower bound <= that baseline's AUROC
      (``bag_of_words``, ``token_embedding``);
    - ``<baseline>_below_chance``: a baseline's interval lies entirely below 0.5 (the words
      alone are anti-predictive: held-out rows are twins of training rows);
    - ``sites_below_chance``: any site's interval lies entirely below 0.5 (a leaky split, or a
      probe that memorises subjects, is the usual cause).
    """
    out: list[dict[str, str]] = []
    lo = best_ci[0]
    best_flags = site_flag_lists.get(best_site, [])
    if "below_chance" in best_flags:
        out.append(
            {
                "flag": "best_below_chance",
                "message": f"the best site {best_site} has an AUROC interval below 0.5 "
                f"(upper bound {best_ci[1]:.3f}): the probe is worse than chance, not a result",
            }
        )
    if "not_above_shuffled_control" in best_flags:
        out.append(
            {
                "flag": "best_not_above_shuffled_control",
                "message": f"{best_site} (lower bound {lo:.3f}) is no better than its "
                "shuffled-label control",
            }
        )
    for name, m in baselines.items():
        if m.get("auroc") is not None and lo <= m["auroc"]:
            out.append(
                {
                    "flag": f"best_not_above_{name}",
                    "message": f"{best_site} (lower bound {lo:.3f}) is no better than the "
                    f"{name.replace('_', '-')} baseline (AUROC {m['auroc']:.3f})",
                }
            )
    for name, m in baselines.items():
        if m.get("auroc_ci") and m["auroc_ci"][1] < 0.5:
            out.append(
                {
                    "flag": f"{name}_below_chance",
                    "message": f"the {name.replace('_', '-')} baseline is below chance "
                    f"(AUROC {m['auroc']:.3f}, upper bound {m['auroc_ci'][1]:.3f}): the words "
                    "anti-predict the held-out labels (twins of training rows with the opposite "
                    "label? give --group COLUMN)",
                }
            )
    below = [s for s, f in site_flag_lists.items() if "below_chance" in f]
    if below:
        out.append(
            {
                "flag": "sites_below_chance",
                "message": f"{len(below)} of {len(site_flag_lists)} sites are below chance "
                f"({', '.join(below[:4])}{', ...' if len(below) > 4 else ''}): a split that "
                "leaks a subject (give --group COLUMN) or a probe memorising subjects",
            }
        )
    return out
