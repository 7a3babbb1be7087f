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
from safelab.interp.probes import LinearProbe, ProbeMethod
from safelab.interp.splits import SplitInfo, make_split
from safelab.stats import DEFAULT_RESAMPLES, detector_metrics, roc_points


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
    labels = np.asarray(data.labels)
    if split is None:
        split = make_split(data, test_frac=test_frac, seed=seed, group=group)
    train, test, info = split
    results: dict[str, SiteResult] = {}
    probes: dict[str, LinearProbe] = {}
    t0 = time.perf_counter()
    fit = SiteFit.of(
        data,
        method=method,
        c=c,
        seed=seed,
        n_resamples=n_resamples,
        model=model_name,
        test_frac=test_frac,
    )
    for site, x in acts.items():
        results[site], probes[site] = fit_site(
            x, labels, train, test, site, fit, controls=controls, split=info.to_dict()
        )
        if progress:
            print_site(results[site])
    return assemble_sweep(
        results,
        probes,
        data,
        split,
        fit,
        controls=controls,
        embeddings=embeddings,
        fit_s=time.perf_counter() - t0,
    )


@dataclass(frozen=True)
class SiteFit:
    """How a probe is fitted and scored at every site of a sweep (and what its cfg records)."""

    method: ProbeMethod = "logistic"
    c: float = 1.0
    seed: int = 0
    n_resamples: int = DEFAULT_RESAMPLES
    model: str = ""
    position: str = "last"
    data: str = ""
    data_hash: str = ""
    test_frac: float = 0.25
    """The held-out fraction asked for (recorded in each probe's cfg)."""

    @classmethod
    def of(
        cls,
        data: ContrastSet,
        *,
        method: ProbeMethod,
        c: float,
        seed: int,
        n_resamples: int,
        model: str,
        test_frac: float,
    ) -> SiteFit:
        position = str(data.position)
        return cls(
            method, c, seed, n_resamples, model, position, data.source, data.data_hash, test_frac
        )


def fit_site(
    x: Tensor,
    labels: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    site: str,
    fit: SiteFit,
    *,
    controls: bool = True,
    split: dict[str, Any] | None = None,
) -> tuple[SiteResult, LinearProbe]:
    """One site of a sweep: the probe, its held-out metrics and (optionally) its control."""
    from safelab.interp import controls as ctl

    if x.shape[0] != len(labels):
        raise SafelabError(f"{site}: {x.shape[0]} activation rows for {len(labels)} examples")
    probe = LinearProbe.fit(
        x[train],
        labels[train],
        site,
        method=fit.method,
        c=fit.c,
        seed=fit.seed,
        position=fit.position,
        model=fit.model,
        data=fit.data,
        data_hash=fit.data_hash,
    )
    test_scores = probe.score(x[test]).numpy()
    train_scores = probe.score(x[train]).numpy()
    m = detector_metrics(test_scores, labels[test], n_resamples=fit.n_resamples, seed=fit.seed)
    fpr, tpr = roc_points(test_scores, labels[test])
    result = SiteResult(
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
        result.control_auroc, result.control_auroc_ci = ctl.shuffled_control(
            x,
            labels,
            train,
            test,
            site,
            method=fit.method,
            c=fit.c,
            seed=fit.seed,
            n_resamples=fit.n_resamples,
        )
    result.flags = ctl.site_flags(m.auroc_ci, result.control_auroc)
    probe.cfg.metrics = {
        "held_out": result.summary(),
        "seed": fit.seed,
        "n_resamples": fit.n_resamples,
        "n_train": len(train),
        "test_frac": fit.test_frac,
        "split": split or {},
    }
    return result, probe


def print_site(r: SiteResult) -> None:
    """One progress line of a sweep."""
    control = "" if r.control_auroc is None else f"  control {r.control_auroc:.3f}"
    marks = f"  [{', '.join(r.flags)}]" if r.flags else ""
    print(
        f"{r.site:>24}  AUROC {r.auroc:.3f} [{r.auroc_ci[0]:.3f}, {r.auroc_ci[1]:.3f}]  "
        f"acc {r.accuracy:.3f}  recall@1%FPR {r.recall_at_1pct_fpr:.3f}{control}{marks}",
        flush=True,
    )


def assemble_sweep(
    results: dict[str, SiteResult],
    probes: dict[str, LinearProbe],
    data: ContrastSet,
    split: tuple[np.ndarray, np.ndarray, SplitInfo],
    fit: SiteFit,
    *,
    controls: bool = True,
    embeddings: Tensor | None = None,
    fit_s: float = 0.0,
) -> SweepResult:
    """The sweep from its sites: baselines on the same split, then the warnings."""
    from safelab.interp import controls as ctl

    labels = np.asarray(data.labels)
    train, test, info = split
    baselines: dict[str, dict[str, Any]] = {}
    if controls:
        bow = ctl.bag_of_words(
            ctl.example_texts(data),
            labels,
            train,
            test,
            seed=fit.seed,
            n_resamples=fit.n_resamples,
        )
        baselines["bag_of_words"] = bow.to_dict()
        if embeddings is not None:
            emb = ctl.embedding_baseline(
                embeddings,
                labels,
                train,
                test,
                method=fit.method,
                c=fit.c,
                seed=fit.seed,
                n_resamples=fit.n_resamples,
            )
            baselines["token_embedding"] = emb.to_dict()
    best = max(results, key=lambda s: results[s].auroc)
    flags = ctl.flags(
        best, results[best].auroc_ci, {s: r.flags for s, r in results.items()}, baselines
    )
    return SweepResult(
        data=data.source,
        data_hash=data.data_hash,
        method=fit.method,
        seed=fit.seed,
        test_frac=fit.test_frac,
        n_train=len(train),
        n_test=len(test),
        sites=results,
        probes=probes,
        fit_s=fit_s,
        split=info.to_dict(),
        baselines=baselines,
        flags=flags,
    )


# -- the sweep as a grid of cells (safelab.distributed): one probe per (site, seed) ----------


@dataclass(frozen=True)
class ProbeCell:
    """One site of a sweep, read from an activation store: what a worker needs and nothing more.

    The worker reads the site's rows from ``store`` itself (nothing heavy is shipped) and saves
    the probe under ``probe_dir`` before its result is committed.
    """

    store: str
    site: str
    labels: tuple[int, ...]
    train: tuple[int, ...]
    test: tuple[int, ...]
    fit: SiteFit
    controls: bool = True
    probe_dir: str | None = None
    split: str = "{}"
    """The split's description as JSON (recorded in the probe's cfg)."""

    @property
    def key(self) -> str:
        return f"{self.site}-seed{self.fit.seed}"


def probe_cell(cell: ProbeCell) -> dict[str, Any]:
    """Fit and score one :class:`ProbeCell`; the site's result as JSON (the probe saved first)."""
    import json

    from safelab.interp.store import ActivationStore

    x = ActivationStore(cell.store).load([cell.site]).acts[cell.site].float()
    result, probe = fit_site(
        x,
        np.asarray(cell.labels),
        np.asarray(cell.train, dtype=np.int64),
        np.asarray(cell.test, dtype=np.int64),
        cell.site,
        cell.fit,
        controls=cell.controls,
        split=json.loads(cell.split),
    )
    if cell.probe_dir is not None:
        probe.save(cell.probe_dir)
    return asdict(result)


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
    xs = [acts[site] for _, acts in datasets]
    rows = [
        matrix_row(i, xs, splits, site, method=method, seed=seed, n_resamples=n_resamples)
        for i in range(len(datasets))
    ]
    return assemble_matrix(site, method, seed, [d.name for d, _ in datasets], rows)


def matrix_row(
    i: int,
    xs: Sequence[Tensor],
    splits: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    site: str,
    *,
    method: ProbeMethod,
    seed: int,
    n_resamples: int,
) -> dict[str, Any]:
    """Row ``i`` of a generalisation matrix: fit on set ``i``'s train split, score every set."""
    labels_i, train_i, _ = splits[i]
    probe = LinearProbe.fit(xs[i][train_i], labels_i[train_i], site, method=method, seed=seed)
    row: dict[str, Any] = {"auroc": [], "auroc_ci": [], "accuracy": []}
    for j, x_j in enumerate(xs):
        labels_j, _, test_j = splits[j]
        idx = test_j if i == j else np.arange(len(labels_j))
        scores = probe.score(x_j[idx]).numpy()
        m = detector_metrics(scores, labels_j[idx], n_resamples=n_resamples, seed=seed)
        row["auroc"].append(m.auroc)
        row["auroc_ci"].append(list(m.auroc_ci))
        row["accuracy"].append(m.accuracy)
    return row


def assemble_matrix(
    site: str, method: str, seed: int, names: list[str], rows: Sequence[Mapping[str, Any]]
) -> GeneralisationMatrix:
    au = [list(r["auroc"]) for r in rows]
    ci = [[list(c) for c in r["auroc_ci"]] for r in rows]
    acc = [list(r["accuracy"]) for r in rows]
    return GeneralisationMatrix(site, method, seed, names, au, ci, acc)


@dataclass(frozen=True)
class MatrixPart:
    """One data set of a generalisation matrix: rows of an activation store, labels, split."""

    name: str
    store: str
    rows: tuple[int, ...]
    labels: tuple[int, ...]
    train: tuple[int, ...]
    test: tuple[int, ...]


@dataclass(frozen=True)
class MatrixRowCell:
    """Row ``index`` of a generalisation matrix (a Ray task: it reads every part's store)."""

    index: int
    site: str
    parts: tuple[MatrixPart, ...]
    method: str = "logistic"
    seed: int = 0
    n_resamples: int = DEFAULT_RESAMPLES

    @property
    def key(self) -> str:
        """The row's name and a digest of everything that decides it (a rerun with other data
        or settings in the same folder computes new rows instead of reading stale ones)."""
        import hashlib

        digest = hashlib.sha256(repr(self).encode()).hexdigest()[:12]
        name = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.parts[self.index].name)
        return f"train-{self.index}-{name}-{digest}"


def matrix_row_cell(cell: MatrixRowCell) -> dict[str, Any]:
    """:func:`matrix_row` of one :class:`MatrixRowCell`, reading the activations itself."""
    from safelab.interp.store import ActivationStore

    loaded: dict[str, Tensor] = {}
    xs = []
    for part in cell.parts:
        if part.store not in loaded:
            loaded[part.store] = (
                ActivationStore(part.store).load([cell.site]).acts[cell.site].float()
            )
        xs.append(loaded[part.store][list(part.rows)])
    splits = [
        (
            np.asarray(p.labels),
            np.asarray(p.train, dtype=np.int64),
            np.asarray(p.test, dtype=np.int64),
        )
        for p in cell.parts
    ]
    return matrix_row(
        cell.index,
        xs,
        splits,
        cell.site,
        method=cell.method,  # type: ignore[arg-type]
        seed=cell.seed,
        n_resamples=cell.n_resamples,
    )
