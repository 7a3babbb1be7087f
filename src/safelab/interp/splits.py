"""Train/test splits that cannot leak a subject: grouped by a column, or by detected near-duplicates.

A row split of minimal pairs ("The city of Paris is in France." / "... is in Japan.") puts
each pair's two statements on both sides; a probe that memorises the subject from the training
twin then scores the held-out twin the wrong way, and the held-out AUROC falls *below* chance.
Every split here keeps a group whole:

- ``--group COLUMN``: rows sharing a value of ``COLUMN`` (e.g. ``city``) stay on one side;
- otherwise A/B pairs stay whole, and near-duplicate statements are detected and grouped
  (:func:`near_duplicate_groups`);
- ``--group rows``: a plain stratified row split (no grouping), for comparison;
- ``--domain COLUMN --test-on D``: train on the other domains, test on ``D``.

The split used is described by a :class:`SplitInfo`, recorded in metrics.json.
"""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from safelab.errors import SafelabError

if TYPE_CHECKING:
    from safelab.interp.contrast import ContrastSet

_WORD = re.compile(r"\w+")
# Near-duplicate rule (documented in docs/probes.md): two texts are near-duplicates when they
# share a rare word (in at most MAX_DF texts: the subject of a minimal pair, not the template or
# a country named in fifty rows), their word sets overlap by Jaccard >= MIN_JACCARD, and they
# differ in at most MAX_DIFF words. Identical texts are always grouped.
MIN_JACCARD = 0.5
MAX_DIFF = 4
MAX_DF = 4


@dataclass
class SplitInfo:
    """How a train/test split was made; ``to_dict`` goes into metrics.json as ``split``."""

    how: str
    """``group:<column>``, ``near_duplicates``, ``pairs``, ``rows`` or ``domain:<column>``."""
    grouped: bool
    seed: int
    test_frac: float
    n_train: int = 0
    n_test: int = 0
    n_groups: int = 0
    n_groups_train: int = 0
    n_groups_test: int = 0
    largest_group: int = 1
    n_multi_row_groups: int = 0
    """Groups with more than one row (pairs, near-duplicates, rows sharing a column value)."""
    train_domains: list[str] = field(default_factory=list)
    test_domains: list[str] = field(default_factory=list)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        """One printed line saying which split was used."""
        if self.how.startswith("domain:"):
            return (
                f"split by {self.how}: train on {', '.join(self.train_domains)} ({self.n_train} rows), "
                f"test on {', '.join(self.test_domains)} ({self.n_test} rows)"
            )
        if not self.grouped:
            return f"split: rows (not grouped), {self.n_train} train / {self.n_test} test, seed {self.seed}"
        return (
            f"split grouped by {self.how}: {self.n_groups} groups ({self.n_multi_row_groups} with "
            f"more than one row, largest {self.largest_group}), {self.n_groups_train} groups / "
            f"{self.n_train} rows train, {self.n_groups_test} groups / {self.n_test} rows test"
            + (f"; {self.note}" if self.note else "")
        )


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


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)

    def labels(self) -> np.ndarray:
        roots = [self.find(i) for i in range(len(self.parent))]
        _, ids = np.unique(roots, return_inverse=True)
        return ids.astype(int)


def words(text: str) -> list[str]:
    """Lower-cased word tokens (what near-duplicate detection compares)."""
    return _WORD.findall(text.lower())


def near_duplicate_groups(
    texts: Sequence[str],
    *,
    min_jaccard: float = MIN_JACCARD,
    max_diff: int = MAX_DIFF,
    max_df: int = MAX_DF,
    links: Sequence[tuple[int, int]] = (),
) -> np.ndarray:
    """A group id per text; near-duplicates (and ``links``, e.g. A/B pair mates) share one.

    Candidates come from an inverted index over rare words (document frequency 2..``max_df``),
    so the cost is ``O(n · max_df)`` comparisons, not ``O(n²)``: 10,000 rows take well under a
    second.
    """
    sets = [frozenset(words(t)) for t in texts]
    uf = _UnionFind(len(texts))
    for a, b in links:
        uf.union(a, b)
    first: dict[str, int] = {}
    for i, t in enumerate(texts):
        key = " ".join(words(t))
        if key in first:
            uf.union(first[key], i)
        else:
            first[key] = i
    index: dict[str, list[int]] = {}
    for i, s in enumerate(sets):
        for w in s:
            index.setdefault(w, []).append(i)
    for rows in index.values():
        if not 2 <= len(rows) <= max_df:
            continue
        for k, a in enumerate(rows):
            for b in rows[k + 1 :]:
                sa, sb = sets[a], sets[b]
                inter = len(sa & sb)
                union = len(sa | sb)
                if union and inter / union >= min_jaccard and union - inter <= max_diff:
                    uf.union(a, b)
    return uf.labels()


def column_values(data: ContrastSet, column: str) -> list[str]:
    """The value of ``column`` for every example, read again from the data file by row.

    Raises:
        SafelabError: the file has no such column (the message lists the columns it has).
    """
    path = Path(data.source)
    rows: dict[str, dict[str, Any]] = {}
    if path.suffix.lower() == ".csv":
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = list(reader.fieldnames or [])
            for row in reader:
                rows[f"{path}:{reader.line_num}"] = row
    else:
        text = path.read_text(encoding="utf-8")
        if text.lstrip().startswith("["):
            for i, rec in enumerate(json.loads(text)):
                rows[f"{path}:item {i}"] = rec
        else:
            for n, line in enumerate(text.splitlines(), start=1):
                if line.strip():
                    rows[f"{path}:{n}"] = json.loads(line)
        fields = sorted({k for r in rows.values() if isinstance(r, dict) for k in r})
    if column not in fields:
        raise SafelabError(
            f"{path}: no column {column!r} to group or split by; it has {', '.join(fields)}: "
            "give one of those (or --group rows for a plain row split)"
        )
    out = []
    for e in data.examples:
        found = rows.get(e.where)
        if found is None:
            raise SafelabError(f"{e.where}: row not found again in {path}: was the file changed?")
        out.append(str(found.get(column, "")))
    return out


def example_groups(data: ContrastSet, group: str | None = None) -> tuple[np.ndarray | None, str]:
    """Group ids for ``data`` and how they were made (see the module docstring).

    Returns ``(None, "rows")`` for ``group == "rows"``.
    """
    if group == "rows":
        return None, "rows"
    pair_links: list[tuple[int, int]] = []
    first_of_pair: dict[int, int] = {}
    for i, e in enumerate(data.examples):
        if e.pair >= 0:
            if e.pair in first_of_pair:
                pair_links.append((first_of_pair[e.pair], i))
            else:
                first_of_pair[e.pair] = i
    if group:
        values = column_values(data, group)
        uf = _UnionFind(len(values))
        seen: dict[str, int] = {}
        for i, v in enumerate(values):
            if v in seen:
                uf.union(seen[v], i)
            else:
                seen[v] = i
        for a, b in pair_links:
            uf.union(a, b)
        return uf.labels(), f"group:{group}"
    texts = [f"{e.prompt}\n{e.text}" for e in data.examples]
    ids = near_duplicate_groups(texts, links=pair_links)
    how = "pairs" if pair_links else "near_duplicates"
    if pair_links and np.bincount(ids).max() > 2:
        how = "pairs+near_duplicates"
    return ids, how


def grouped_split(
    labels: Sequence[int] | np.ndarray, groups: np.ndarray, test_frac: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """One fold of scikit-learn's ``StratifiedGroupKFold`` (``1/test_frac`` folds) as the test set."""
    from sklearn.model_selection import StratifiedGroupKFold

    if not 0 < test_frac < 1:
        raise SafelabError(f"test fraction must be between 0 and 1, got {test_frac}")
    y = np.asarray(labels).astype(int)
    n_splits = max(2, round(1 / test_frac))
    if len(np.unique(groups)) < n_splits:
        raise SafelabError(
            f"only {len(np.unique(groups))} groups for a {n_splits}-fold grouped split: "
            "use more data, a finer --group column, or --group rows"
        )
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train, test = next(iter(folds.split(np.zeros(len(y)), y, groups)))
    for name, part in (("train", train), ("test", test)):
        if len(set(y[part].tolist())) < 2:
            raise SafelabError(
                f"the grouped {name} split has only one label ({len(part)} examples): "
                "use more data, another --seed, or --group rows"
            )
    return np.sort(train), np.sort(test)


def make_split(
    data: ContrastSet,
    *,
    test_frac: float = 0.25,
    seed: int = 0,
    group: str | None = None,
    domain: str | None = None,
    train_on: Sequence[str] | None = None,
    test_on: Sequence[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, SplitInfo]:
    """Train and test row indices for ``data`` and the :class:`SplitInfo` that describes them."""

    labels = np.asarray(data.labels).astype(int)
    if domain or train_on or test_on:
        return _domain_split(data, labels, domain, train_on, test_on, seed, test_frac)
    groups, how = example_groups(data, group)
    if groups is None:
        train, test = split_indices(labels, test_frac, seed)
        info = SplitInfo("rows", False, seed, test_frac, len(train), len(test), len(labels))
        info.n_groups_train, info.n_groups_test = len(train), len(test)
        return train, test, info
    if how == "pairs":
        # Every group is one A/B pair: the long-standing seeded pair split (balanced by design).
        train, test = split_indices(labels, test_frac, seed, groups.tolist())
    else:
        train, test = grouped_split(labels, groups, test_frac, seed)
    sizes = np.bincount(groups)
    info = SplitInfo(
        how,
        True,
        seed,
        test_frac,
        n_train=len(train),
        n_test=len(test),
        n_groups=len(sizes),
        n_groups_train=len(np.unique(groups[train])),
        n_groups_test=len(np.unique(groups[test])),
        largest_group=int(sizes.max()),
        n_multi_row_groups=int((sizes > 1).sum()),
    )
    if sizes.max() > 0.2 * len(labels):
        info.note = (
            f"one group holds {sizes.max()} of {len(labels)} rows: the data may be one template; "
            "give --group COLUMN"
        )
    return train, test, info


def _domain_split(
    data: ContrastSet,
    labels: np.ndarray,
    domain: str | None,
    train_on: Sequence[str] | None,
    test_on: Sequence[str] | None,
    seed: int,
    test_frac: float,
) -> tuple[np.ndarray, np.ndarray, SplitInfo]:
    if not domain or not test_on:
        raise SafelabError(
            "a cross-domain split needs --domain COLUMN and --test-on DOMAIN[,DOMAIN] "
            "(--train-on defaults to every other domain)"
        )
    values = np.asarray(column_values(data, domain))
    present = sorted(set(values.tolist()))
    test_set = set(test_on)
    train_set = set(train_on) if train_on else set(present) - test_set
    unknown = sorted((test_set | train_set) - set(present))
    if unknown:
        raise SafelabError(
            f"--train-on/--test-on name {', '.join(unknown)}, not in column {domain!r} "
            f"(it has {', '.join(present)})"
        )
    if test_set & train_set:
        raise SafelabError(
            f"{', '.join(sorted(test_set & train_set))} is in both --train-on and --test-on"
        )
    train = np.flatnonzero(np.isin(values, sorted(train_set)))
    test = np.flatnonzero(np.isin(values, sorted(test_set)))
    for name, part in (("train", train), ("test", test)):
        if len(set(labels[part].tolist())) < 2:
            raise SafelabError(
                f"the {name} domains have only one label ({len(part)} rows): pick other domains"
            )
    info = SplitInfo(
        f"domain:{domain}",
        True,
        seed,
        test_frac,
        n_train=len(train),
        n_test=len(test),
        n_groups=len(present),
        n_groups_train=len(train_set),
        n_groups_test=len(test_set),
        largest_group=int(max(Counter(values.tolist()).values())),
        n_multi_row_groups=len(present),
        train_domains=sorted(train_set),
        test_domains=sorted(test_set),
    )
    return train, test, info
