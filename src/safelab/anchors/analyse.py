"""All three views of one trace: rollouts per prefix, importance with intervals, attention."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from safelab.anchors import importance as imp
from safelab.anchors.embed import Embed, cosine
from safelab.anchors.rollouts import Rollout, RolloutSettings, prefix_text, rollouts_for_prefix
from safelab.anchors.traces import ANSWER_PREFIX, Trace

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel

METHODS = (
    "resampling",
    "counterfactual",
    "forced",
    "receiver",
    "suppression",
    "answer_suppression",
)


@dataclass(frozen=True)
class AnalysisSettings:
    """What one trace's analysis reads; built by ``AnchorsConfig.settings()``, which holds the
    defaults (the one place they are set)."""

    rollouts: int
    rollout: RolloutSettings
    similarity: float
    alpha: float
    n_boot: int
    proximity: int
    top_heads: int
    anchor_threshold: float
    attention: bool
    batch: int
    resample: bool
    """False: only the forced-answer and white-box views (no rollouts)."""
    elicited: str
    """``sampled``: an elicited answer counts as the option drawn; ``expected``: as the
    distribution it is drawn from (less noise from the draw, same mean)."""


def forced_distribution(
    model: WhiteBoxModel, trace: Trace, k: int, categories: list[str]
) -> np.ndarray:
    """The model's distribution over ``categories`` when made to answer right after prefix ``k``:
    each category's probability after ``Answer:`` (all its tokens), renormalised."""
    from safelab.anchors.rollouts import category_ids, category_logprobs

    text = prefix_text(model, trace, k) + ("\n" if k > 0 else "") + ANSWER_PREFIX
    ids = list(model.tokenizer(text, add_special_tokens=False)["input_ids"])
    s = category_logprobs(model, ids, category_ids(model, categories)).numpy().astype(float)
    p = np.exp(s - s.max())
    return np.asarray(p / p.sum())


def _interval(x: float, lo: float, hi: float) -> dict[str, float | None]:
    def f(v: float) -> float | None:
        return None if math.isnan(v) else v

    return {"value": f(x), "lo": f(lo), "hi": f(hi)}


def analyse_trace(
    model: WhiteBoxModel,
    trace: Trace,
    s: AnalysisSettings,
    embed: Embed,
    cache: Path | None,
    seed: int = 0,
) -> dict[str, Any]:
    """Every method's importance for each sentence of ``trace`` (a JSON-ready dict)."""
    from safelab.anchors.attention import (
        answer_suppression,
        receiver_scores,
        segment_trace,
        sentence_attention,
        suppression_importance,
        suppression_matrix,
    )

    trace.check()
    sentences = trace.sentences
    n = len(sentences)
    per_prefix: list[list[Rollout]] = [
        rollouts_for_prefix(model, trace, k, s.rollouts, s.rollout, cache, s.batch)
        if s.resample
        else []
        for k in range(n + 1)
    ]
    categories = sorted(
        {r.answer for rs in per_prefix for r in rs if r.answer is not None}
        | set(trace.options)
        | {trace.answer}
    )
    code = {c: i for i, c in enumerate(categories)}

    def weights(r: Rollout) -> np.ndarray:
        row = np.zeros(len(categories))
        if s.elicited == "expected" and r.elicited and r.probs:
            for c, p in r.probs.items():
                row[code[c]] = p
        else:
            row[code[str(r.answer)]] = 1.0
        return row

    def rows(rs: list[Rollout]) -> np.ndarray:
        return np.array([weights(r) for r in rs]).reshape(len(rs), len(categories))

    answers = [rows([r for r in rs if r.answer is not None]) for rs in per_prefix]
    forced = [forced_distribution(model, trace, k, categories) for k in range(n + 1)]

    resampling, counterfactual, forced_imp = [], [], []
    n_dissimilar = []
    for i in range(n):
        kept, resampled = answers[i + 1], answers[i]
        boot_seed = seed * 1000 + i
        resampling.append(
            _interval(
                imp.kl_weights(kept, resampled, s.alpha),
                *imp.bootstrap_kl_weights(kept, resampled, s.alpha, s.n_boot, boot_seed),
            )
        )
        scorable = [r for r in per_prefix[i] if r.answer is not None]
        if scorable:
            cos = cosine(
                embed([r.first_sentence for r in scorable]), embed([sentences[i]] * len(scorable))
            )
            dissimilar = rows([r for r, c in zip(scorable, cos, strict=True) if c < s.similarity])
        else:
            dissimilar = rows([])
        n_dissimilar.append(len(dissimilar))
        counterfactual.append(
            _interval(
                imp.kl_weights(kept, dissimilar, s.alpha),
                *imp.bootstrap_kl_weights(kept, dissimilar, s.alpha, s.n_boot, boot_seed),
            )
        )
        forced_imp.append(imp.forced_kl(forced[i + 1], forced[i]))

    out: dict[str, Any] = {
        "id": trace.id,
        "kind": trace.kind,
        "question": trace.question,
        "sentences": sentences,
        "answer": trace.answer,
        "correct": trace.correct,
        "planted": trace.planted,
        "categories": categories,
        "prefixes": [
            {
                "k": k,
                "rollouts": len(rs),
                "unscorable": sum(r.answer is None for r in rs),
                "counts": {c: int(sum(1 for r in rs if r.answer == c)) for c in categories},
                "weights": {c: round(float(answers[k][:, code[c]].sum()), 4) for c in categories},
                "elicited": sum(r.elicited for r in rs),
                "forced": {c: float(p) for c, p in zip(categories, forced[k], strict=True)},
                "example": rs[0].text[:300] if rs else "",
            }
            for k, rs in enumerate(per_prefix)
        ],
        "n_dissimilar": n_dissimilar,
        "forced": [{"value": v, "lo": None, "hi": None} for v in forced_imp],
    }
    if s.resample:
        out.update(resampling=resampling, counterfactual=counterfactual)
    if s.attention:
        seg = segment_trace(model, trace)
        att = sentence_attention(model, seg)
        rec, heads, kurt = receiver_scores(att, s.proximity, s.top_heads)
        from safelab.anchors.rollouts import category_ids

        full = suppression_matrix(model, seg, category_ids(model, categories))
        M, sup, ans_sup = full[:, :-1], suppression_importance(full), answer_suppression(full)
        out.update(
            receiver=[{"value": float(v), "lo": None, "hi": None} for v in rec],
            suppression=[{"value": float(v), "lo": None, "hi": None} for v in sup],
            answer_suppression=[{"value": float(v), "lo": None, "hi": None} for v in ans_sup],
            suppression_matrix=M.tolist(),
            receiver_heads=[list(h) for h in heads],
            receiver_attention=np.mean(
                [att[layer, head] for layer, head in heads], axis=0
            ).tolist(),
            kurtosis_top=[float(kurt[layer, head]) for layer, head in heads],
            n_tokens=len(seg.ids),
        )
    scores = {m: [e["value"] for e in out[m]] for m in METHODS if m in out}
    out["ranks"] = {
        m: imp.ranks([float("nan") if v is None else v for v in vals]) for m, vals in scores.items()
    }
    out["anchors_by_method"] = {m: anchors(out[m], m, s.anchor_threshold) for m in scores}
    out["anchors"] = out["anchors_by_method"].get("resampling", [])
    return out


def anchors(entries: list[dict[str, Any]], method: str, threshold: float) -> list[int]:
    """The sentences the anchor rule flags under ``method``.

    Resampling and counterfactual: the 95% interval's lower end is at least ``threshold`` nats.
    Forced and answer suppression: the (deterministic) KL is at least ``threshold``. Receiver and suppression, which
    have no scale of their own: more than twice the mean of the trace's other sentences.
    """
    vals = [e["value"] for e in entries]
    if method in ("resampling", "counterfactual"):
        return [i for i, e in enumerate(entries) if e["lo"] is not None and e["lo"] >= threshold]
    if method in ("forced", "answer_suppression"):
        return [i for i, v in enumerate(vals) if v is not None and v >= threshold]
    out = []
    for i, v in enumerate(vals):
        rest = [x for j, x in enumerate(vals) if j != i and x is not None]
        if v is not None and rest and v > 2 * float(np.mean(rest)):
            out.append(i)
    return out
