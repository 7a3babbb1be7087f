"""Probe sweeps over sites, held-out evaluation and the cross-dataset generalisation matrix.

Everything here works on cached activations (``{site: [n, d_model]}``), so changing the probe,
the split or the site never re-captures.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from safelab.errors import SafelabError
from safelab.interp.contrast import ContrastSet
from safelab.interp.metrics import DEFAULT_RESAMPLES, detector_metrics, roc_points
from safelab.interp.probes import LinearProbe, ProbeMethod
from safelab.interp.splits import SplitInfo, make_split


def split_indices(
    labels: Sequence[int] | np.ndarray,
    test_frac: float = 0.25,
    seed: int = 0,
    groups: Sequence[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """A seeded train/test split, stratified by label; ``groups`` (e.g. A/B pair ids) stay whole.

    Raises:
        SafelabError: a split would lack one of the two labels.
    """
    if not 0 < test_frac < 1:
        raise SafelabError(f"test fraction must be between 0 and 1, got {test_frac}")
    y = np.asarray(labels).astype(int)
    rng = np.random.default_rng(seed)
    if groups is not None and len(groups) and min(groups) >= 0:
        g = np.asarray(groups)
        uniq = np.unique(g)
        rng.shuffle(uniq)
        n_test = max(1, round(test_frac * len(uniq)))
        test_groups = set(uniq[:n_test].tolist())
        test = np.array([i for i in range(len(y)) if g[i] in test_groups])
    else:
        test_parts = []
        for c in (0, 1):
            idx = np.flatnonzero(y == c)
            rng.shuffle(idx)
            test_parts.append(idx[: max(1, round(test_frac * len(idx)))])
        test = np.concatenate(test_parts)
    mask = np.zeros(len(y), dtype=bool)
    mask[test] = True
    train, test = np.flatnonzero(~mask), np.flatnonzero(mask)
    for name, part in (("train", train), ("test", test)):
        if len(set(y[part].tolist())) < 2:
            raise SafelabError(
                f"the {name} split has only one label ({len(part)} examples): use more data "
                "or another --test-frac"
            )
    return train, test


@dataclass
class SiteResult:
    site: str
    auroc: float
    auroc_ci: list[float]
    accuracy: float
    accuracy_ci: list[float]
    recall_at_1pct_fpr: float
    recall_at_1pct_fpr_ci: list[float]
    train_accuracy: float
    n_test: int
    roc: dict[str, list[float]] = field(default_factory=dict)
    control_auroc: float | None = None
    """Mean held-out AUROC of shuffled-label control probes at this site (same split)."""
    control_auroc_ci: list[float] | None = None
    flags: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("roc")
        return out


@dataclass
class SweepResult:
    """A probe per site, each evaluated on the same held-out split."""

    data: str
    data_hash: str
    method: str
    seed: int
    test_frac: float
    n_train: int
    n_test: int
    sites: dict[str, SiteResult]
    probes: dict[str, LinearProbe]
    fit_s: float = 0.0
    split: dict[str, Any] = field(default_factory=dict)
    baselines: dict[str, dict[str, Any]] = field(default_factory=dict)
    """``bag_of_words`` / ``token_embedding``: held-out metrics on the same split."""
    flags: list[dict[str, str]] = field(default_factory=list)

    @property
    def best_site(self) -> str:
        return max(self.sites, key=lambda s: self.sites[s].auroc)

    def to_dict(self) -> dict[str, Any]:
        best = self.best_site
        return {
            "best_site": best,
            "best_auroc": self.sites[best].auroc,
            "best_auroc_ci": self.sites[best].auroc_ci,
            "data": self.data,
            "data_hash": self.data_hash,
            "method": self.method,
            "seed": self.seed,
            "test_frac": self.test_frac,
            "n_train": self.n_train,
            "n_test": self.n_test,
            "flags": self.flags,
            "split": self.split,
            "baselines": self.baselines,
            "sites": {s: r.summary() for s, r in self.sites.items()},
        }


def fit_and_evaluate(
    acts: Mapping[str, Tensor],
    data: ContrastSet,
    *,
    method: ProbeMethod = "logistic",
    c: float = 1.0,
    test_frac: float = 0.25,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    model_name: str = "",
    progress: bool = False,
    split: tuple[np.ndarray, np.ndarray, SplitInfo] | None = None,
    group: str | None = None,
    controls: bool = True,
    embeddings: Tensor | None = None,
) -> SweepResult:
    """Fit one probe per site on a train split and score it on the held-out split.

    Args:
        split: ``(train, test, info)`` from :func:`safelab.interp.splits.make_split`; default:
            a grouped split made here (``group`` column, else pairs and near-duplicates).
        controls: also fit a shuffled-label control per site and a bag-of-words baseline on
            the same split, and flag results no better than them (:mod:`safelab.interp.controls`).
        embeddings: ``[n, d_model]`` input embeddings at the read token, for the token-embedding
            baseline (see :func:`safelab.interp.controls.token_embeddings`).
    """
    from safelab.interp import controls as ctl

    labels = np.asarray(data.labels)
    if split is None:
        split = make_split(data, test_frac=test_frac, seed=seed, group=group)
    train, test, info = split
    results: dict[str, SiteResult] = {}
    probes: dict[str, LinearProbe] = {}
    t0 = time.perf_counter()
    for site, x in acts.items():
        if x.shape[0] != len(labels):
            raise SafelabError(f"{site}: {x.shape[0]} activation rows for {len(labels)} examples")
        probe = LinearProbe.fit(
            x[train],
            labels[train],
            site,
            method=method,
            c=c,
            seed=seed,
            position=str(data.position),
            model=model_name,
            data=data.source,
            data_hash=data.data_hash,
        )
        test_scores = probe.score(x[test]).numpy()
        train_scores = probe.score(x[train]).numpy()
        m = detector_metrics(test_scores, labels[test], n_resamples=n_resamples, seed=seed)
        fpr, tpr = roc_points(test_scores, labels[test])
        results[site] = SiteResult(
            site=site,
            auroc=m.auroc,
            auroc_ci=m.auroc_ci,
            accuracy=m.accuracy,
            accuracy_ci=m.accuracy_ci,
            recall_at_1pct_fpr=m.recall_at_1pct_fpr,
            recall_at_1pct_fpr_ci=m.recall_at_1pct_fpr_ci,
            train_accuracy=float(((train_scores > 0.5).astype(int) == labels[train]).mean()),
            n_test=len(test),
            roc={"fpr": fpr, "tpr": tpr},
        )
        if controls:
            results[site].control_auroc, results[site].control_auroc_ci = ctl.shuffled_control(
                x, labels, train, test, site, method=method, c=c, seed=seed, n_resamples=n_resamples
            )
        results[site].flags = ctl.site_flags(m.auroc_ci, results[site].control_auroc)
        probe.cfg.metrics = {
            "held_out": results[site].summary(),
            "seed": seed,
            "n_resamples": n_resamples,
            "n_train": len(train),
            "test_frac": test_frac,
            "split": info.to_dict(),
        }
        probes[site] = probe
        if progress:
            r = results[site]
            control = "" if r.control_auroc is None else f"  control {r.control_auroc:.3f}"
            marks = f"  [{', '.join(r.flags)}]" if r.flags else ""
            print(
                f"{site:>24}  AUROC {r.auroc:.3f} [{r.auroc_ci[0]:.3f}, {r.auroc_ci[1]:.3f}]  "
                f"acc {r.accuracy:.3f}  recall@1%FPR {r.recall_at_1pct_fpr:.3f}{control}{marks}",
                flush=True,
            )
    baselines: dict[str, dict[str, Any]] = {}
    if controls:
        bow = ctl.bag_of_words(
            ctl.example_texts(data), labels, train, test, seed=seed, n_resamples=n_resamples
        )
        baselines["bag_of_words"] = bow.to_dict()
        if embeddings is not None:
            emb = ctl.embedding_baseline(
                embeddings,
                labels,
                train,
                test,
                method=method,
                c=c,
                seed=seed,
                n_resamples=n_resamples,
            )
            baselines["token_embedding"] = emb.to_dict()
    best = max(results, key=lambda s: results[s].auroc)
    flags = ctl.flags(
        best,
        results[best].auroc_ci,
        {s: r.flags for s, r in results.items()},
        baselines,
    )
    return SweepResult(
        data=data.source,
        data_hash=data.data_hash,
        method=method,
        seed=seed,
        test_frac=test_frac,
        n_train=len(train),
        n_test=len(test),
        sites=results,
        probes=probes,
        fit_s=time.perf_counter() - t0,
        split=info.to_dict(),
        baselines=baselines,
        flags=flags,
    )


@dataclass
class GeneralisationMatrix:
    """``auroc[i][j]``: a probe trained on ``names[i]`` scored on ``names[j]``.

    The diagonal is held-out (test split of the training set); off-diagonal cells score the
    whole other data set.
    """

    site: str
    method: str
    seed: int
    names: list[str]
    auroc: list[list[float]]
    auroc_ci: list[list[list[float]]]
    accuracy: list[list[float]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def generalisation_matrix(
    datasets: Sequence[tuple[ContrastSet, Mapping[str, Tensor]]],
    site: str,
    *,
    method: ProbeMethod = "logistic",
    test_frac: float = 0.25,
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    group: str | None = None,
) -> GeneralisationMatrix:
    """Train on each data set's train split at ``site``; test on every data set.

    The diagonal's split is grouped as in :func:`fit_and_evaluate` (``group`` column, else pairs
    and near-duplicates).
    """
    if len(datasets) < 2:
        raise SafelabError("a generalisation matrix needs at least two data sets")
    splits = []
    for data, acts in datasets:
        if site not in acts:
            raise SafelabError(f"site {site} was not captured for {data.name}")
        labels = np.asarray(data.labels)
        train, test, _ = make_split(data, test_frac=test_frac, seed=seed, group=group)
        splits.append((labels, train, test))
    n = len(datasets)
    au = [[0.0] * n for _ in range(n)]
    ci: list[list[list[float]]] = [[[0.0, 0.0] for _ in range(n)] for _ in range(n)]
    acc = [[0.0] * n for _ in range(n)]
    for i, (data_i, acts_i) in enumerate(datasets):
        labels_i, train_i, _ = splits[i]
        probe = LinearProbe.fit(
            acts_i[site][train_i], labels_i[train_i], site, method=method, seed=seed
        )
        for j, (_, acts_j) in enumerate(datasets):
            labels_j, _, test_j = splits[j]
            idx = test_j if i == j else np.arange(len(labels_j))
            scores = probe.score(acts_j[site][idx]).numpy()
            m = detector_metrics(scores, labels_j[idx], n_resamples=n_resamples, seed=seed)
            au[i][j], ci[i][j], acc[i][j] = m.auroc, m.auroc_ci, m.accuracy
        del data_i
    return GeneralisationMatrix(site, method, seed, [d.name for d, _ in datasets], au, ci, acc)
