"""Weak supervisors: models weaker than the student that label the strong-train split.

Each is trained on the ground truth of weak-train only and returns ``p(label=1)`` for every row
of the task; its probabilities on strong-train are the soft weak labels the student learns from
(as in Burns et al.), its probabilities on test are its own score.

- ``bow``: a bag-of-words (unigram + bigram counts) logistic regression on the raw text;
- ``probe`` or ``probe:<site>``: a logistic probe on an early layer of the same model
  (``blocks.1.resid_post`` by default), so the weak model sees the text through two blocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from torch import Tensor

from safelab.errors import SafelabError

DEFAULT_PROBE_SITE = "blocks.1.resid_post"


@dataclass(frozen=True)
class WeakSpec:
    """A parsed ``--weak`` value."""

    kind: str
    """``bow`` or ``probe``."""
    site: str | None = None

    @property
    def name(self) -> str:
        return self.kind if self.site is None else f"{self.kind}:{self.site}"


def parse_weak(value: str) -> WeakSpec:
    """``bow``, ``probe`` or ``probe:<site>``."""
    kind, _, site = value.partition(":")
    if kind == "bow" and not site:
        return WeakSpec("bow")
    if kind == "probe":
        return WeakSpec("probe", site or DEFAULT_PROBE_SITE)
    raise SafelabError(f"unknown weak supervisor {value!r}: use bow, probe or probe:<site>")


def _check_labels(labels: np.ndarray, what: str) -> None:
    if set(np.unique(labels).tolist()) != {0, 1}:
        raise SafelabError(f"{what}: the weak-train split needs both classes 0 and 1")


def bow_probs(
    texts: Sequence[str], labels: Sequence[int], train: Sequence[int], *, c: float = 1.0
) -> np.ndarray:
    """Bag-of-words logistic regression fit on ``train`` rows; ``p(1)`` for every text."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    y = np.asarray(labels)[list(train)]
    _check_labels(y, "bag-of-words supervisor")
    vec = CountVectorizer(ngram_range=(1, 2), min_df=1, lowercase=True)
    x_train = vec.fit_transform([texts[i] for i in train])
    with threadpool_limits(1):
        clf = LogisticRegression(C=c, max_iter=2000).fit(x_train, y)
        return np.asarray(clf.predict_proba(vec.transform(list(texts)))[:, 1], dtype=np.float64)


def probe_probs(
    acts: Tensor, labels: Sequence[int], train: Sequence[int], site: str, *, c: float = 1.0
) -> np.ndarray:
    """A logistic probe at ``site`` fit on ``train`` rows; ``p(1)`` for every row."""
    from safelab.interp.probes import LinearProbe

    y = np.asarray(labels)[list(train)]
    _check_labels(y, f"probe supervisor at {site}")
    probe = LinearProbe.fit(acts[list(train)], y, site, c=c)
    return np.asarray(probe.score(acts).numpy(), dtype=np.float64)


def weak_probs(
    spec: WeakSpec,
    texts: Sequence[str],
    labels: Sequence[int],
    train: Sequence[int],
    acts: Mapping[str, Tensor] | None = None,
) -> np.ndarray:
    """The weak supervisor's ``p(label=1)`` for every row, trained on ``train``."""
    if spec.kind == "bow":
        return bow_probs(texts, labels, train)
    if spec.site is None or acts is None or spec.site not in acts:
        raise SafelabError(
            f"weak supervisor {spec.name} needs activations at {spec.site}: capture that site"
        )
    return probe_probs(acts[spec.site], labels, train, spec.site)
