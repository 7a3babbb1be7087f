"""Labelled entity spans, a token-level probe on them, and its span-level evaluation.

Every answer's stated attribute (:func:`~safelab.hallucination.matching.find_attribute`) becomes
a :class:`Span`: its answer tokens and label (1 = fabricated). The probe is trained on the
tokens of training spans (each token carries its span's label) and a span's probe score is the
**max over its tokens**. Baselines score the same spans without training:

- ``logprob``: ``-min`` token log-probability over the span (a surprised model guesses);
- ``entropy``: ``max`` predictive entropy over the span;
- ``consistency``: ``1 -`` the share of ``n_samples`` sampled answers that state the same
  attribute (an answer the model does not repeat is likely made up; semantic entropy's idea
  on a closed-world span).

Metrics are span-level AUROC and recall at 10% FPR, each with a stratified bootstrap 95%
interval (seeded). "No better than" a baseline or the shuffled-label control means the probe's
AUROC interval reaches the other's point estimate (lower bound <= it), as in
:func:`safelab.interp.controls.flags`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from safelab.hallucination.matching import char_span_to_tokens, find_attribute, token_char_offsets
from safelab.stats import auroc, bootstrap_cis, recall_at_fpr

if TYPE_CHECKING:
    from safelab.hallucination.collect import Answer, TokenFeatures
    from safelab.hallucination.tables import FactTable
    from safelab.interp.probes import LinearProbe

BASELINES = ("logprob", "entropy", "consistency")


@dataclass
class Span:
    """One labelled attribute mention in one answer."""

    answer: int
    table: str
    entity: str
    attribute: str
    text: str
    start: int
    end: int
    tokens: list[int]
    label: int
    agreement: float
    """share of the sampled answers stating the same (canonical) attribute."""
    scores: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def label_spans(
    answers: Sequence[Answer], tables: dict[str, FactTable], tokenizer: Any
) -> tuple[list[Span], Counter[str]]:
    """A span per answer whose attribute matches its table; the excluded counted by reason."""
    spans: list[Span] = []
    excluded: Counter[str] = Counter()
    for i, a in enumerate(answers):
        table = tables[a.table]
        m = find_attribute(table, a.entity, a.text)
        if m is None:
            excluded[f"{a.table}:no_attribute"] += 1
            continue
        offsets = token_char_offsets(tokenizer, a.completion_ids)
        toks = char_span_to_tokens(offsets, m.start, m.end)
        if not toks:
            excluded[f"{a.table}:no_tokens"] += 1
            continue
        same = [find_attribute(table, a.entity, s) for s in a.samples]
        agree = (
            sum(1 for s in same if s is not None and s.attribute == m.attribute) / len(same)
            if same
            else float("nan")
        )
        spans.append(
            Span(i, a.table, a.entity, m.attribute, m.text, m.start, m.end, toks, m.label, agree)
        )
    return spans, excluded


def span_rows(feats: TokenFeatures, spans: Sequence[Span]) -> list[torch.Tensor]:
    """Feature-row indices of each span's tokens."""
    out = []
    for s in spans:
        rows = feats.rows(s.answer)
        out.append(rows[torch.tensor(s.tokens, dtype=torch.long)])
    return out


def baseline_scores(feats: TokenFeatures, spans: Sequence[Span]) -> dict[str, np.ndarray]:
    """Each baseline's span score (higher = more likely fabricated)."""
    rows = span_rows(feats, spans)
    return {
        "logprob": np.array([-float(feats.logprob[r].min()) for r in rows]),
        "entropy": np.array([float(feats.entropy[r].max()) for r in rows]),
        "consistency": np.array([1.0 - s.agreement for s in spans]),
    }


def fit_token_probe(
    feats: TokenFeatures,
    spans: Sequence[Span],
    labels: np.ndarray,
    site: str,
    *,
    c: float = 1.0,
    seed: int = 0,
    **cfg: Any,
) -> LinearProbe:
    """A logistic probe on every token of ``spans``, each labelled with its span's label."""
    from safelab.interp.probes import LinearProbe

    rows = span_rows(feats, spans)
    x = torch.cat([feats.acts[site][r] for r in rows])
    y = np.concatenate([np.full(len(r), labels[k]) for k, r in enumerate(rows)])
    return LinearProbe.fit(x, y, site, c=c, seed=seed, position="response", **cfg)


def probe_span_scores(
    probe: LinearProbe, feats: TokenFeatures, spans: Sequence[Span]
) -> np.ndarray:
    """The probe's span score: max over the span's tokens."""
    rows = span_rows(feats, spans)
    x = feats.acts[probe.site]
    return np.array([float(probe.score(x[r]).max()) for r in rows])


def span_metrics(
    scores: np.ndarray, labels: np.ndarray, *, fpr: float, n_resamples: int, seed: int
) -> dict[str, Any]:
    """Span-level AUROC and recall at ``fpr``, with 95% bootstrap intervals."""

    def recall(s: np.ndarray, y: np.ndarray) -> float:
        return recall_at_fpr(s, y, fpr)

    ci_a, ci_r = bootstrap_cis([auroc, recall], scores, labels, n_resamples=n_resamples, seed=seed)
    return {
        "n": len(labels),
        "n_fabricated": int(labels.sum()),
        "auroc": round(auroc(scores, labels), 4),
        "auroc_ci": [round(ci_a[0], 4), round(ci_a[1], 4)],
        "recall_at_fpr": round(recall(scores, labels), 4),
        "recall_at_fpr_ci": [round(ci_r[0], 4), round(ci_r[1], 4)],
        "fpr": fpr,
        "seed": seed,
        "n_resamples": n_resamples,
    }


def no_better_flags(
    probe: dict[str, Any], others: dict[str, dict[str, Any]]
) -> list[dict[str, str]]:
    """``probe_not_above_<name>`` for each baseline/control the probe's interval reaches."""
    out = []
    lo = probe["auroc_ci"][0]
    for name, m in others.items():
        if m.get("auroc") is not None and lo <= m["auroc"]:
            out.append(
                {
                    "flag": f"probe_not_above_{name}",
                    "message": f"the probe (AUROC {probe['auroc']:.3f}, lower bound {lo:.3f}) is "
                    f"no better than {name.replace('_', ' ')} (AUROC {m['auroc']:.3f})",
                }
            )
    if probe["auroc_ci"][1] < 0.5:
        out.append(
            {
                "flag": "probe_below_chance",
                "message": f"the probe's AUROC interval lies below 0.5 ({probe['auroc_ci']})",
            }
        )
    return out
