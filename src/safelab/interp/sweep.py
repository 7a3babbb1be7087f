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
) -> SweepResult:
    """Fit one probe per site on a train split and score it on the held-out split."""
    labels = np.asarray(data.labels)
    groups = [e.pair for e in data.examples]
    train, test = split_indices(labels, test_frac, seed, groups)
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
        probe.cfg.metrics = {
            "held_out": results[site].summary(),
            "seed": seed,
            "n_resamples": n_resamples,
            "n_train": len(train),
            "test_frac": test_frac,
        }
        probes[site] = probe
        if progress:
            r = results[site]
            print(
                f"{site:>24}  AUROC {r.auroc:.3f} [{r.auroc_ci[0]:.3f}, {r.auroc_ci[1]:.3f}]  "
                f"acc {r.accuracy:.3f}  recall@1%FPR {r.recall_at_1pct_fpr:.3f}",
                flush=True,
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
) -> GeneralisationMatrix:
    """Train on each data set's train split at ``site``; test on every data set."""
    if len(datasets) < 2:
        raise SafelabError("a generalisation matrix needs at least two data sets")
    splits = []
    for data, acts in datasets:
        if site not in acts:
            raise SafelabError(f"site {site} was not captured for {data.name}")
        labels = np.asarray(data.labels)
        splits.append(
            (labels, *split_indices(labels, test_frac, seed, [e.pair for e in data.examples]))
        )
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
