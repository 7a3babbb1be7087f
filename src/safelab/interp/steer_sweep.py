"""Steering vectors from A/B pairs, and their effect measured on held-out pairs.

The behaviour measure is the model's probability of the behaviour-matching answer, normalised
over the two answers at the first token where they differ (the answer letter of ``(A)`` /
``(B)``)::

    p(match) = softmax(logits[match_token], logits[other_token])[0]

read after the chat prompt and the answers' common prefix (``(``). A sweep reports, for each
site and scale, the mean change ``Δp = p_steered - p_unsteered`` over held-out pairs with a
paired bootstrap interval, and the capability cost as the change in accuracy on a
multiple-choice set (MMLU in CAA's ``prompt, correct, incorrect`` format).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.interp.contrast import ContrastSet, Pair, Template
from safelab.interp.steering import SteeringConfig, SteeringVector, resolve_steer
from safelab.stats import DEFAULT_RESAMPLES, mean_ci

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel

SteerMethod = Literal["mean_diff", "pca"]


@dataclass(frozen=True)
class ChoicePrompt:
    """Token ids up to the answers' first differing token, and the two candidate tokens."""

    ids: list[int]
    match_id: int
    other_id: int
    where: str = ""


def choice_prompts(
    model: WhiteBoxModel, pairs: Sequence[Pair], template: Template = "chat"
) -> list[ChoicePrompt]:
    """One :class:`ChoicePrompt` per pair (the question as the user's turn under ``chat``)."""
    tok = model.tokenizer
    out = []
    for p in pairs:
        if template == "chat":
            prefix = model.render_chat(
                [{"role": "user", "content": p.question}], add_generation_prompt=True
            )
            head = list(tok(prefix, add_special_tokens=False)["input_ids"])
        else:
            head = (
                list(tok(p.question + "\n", add_special_tokens=True)["input_ids"])
                if p.question
                else []
            )
        ta = tok(p.matching, add_special_tokens=False)["input_ids"]
        tb = tok(p.not_matching, add_special_tokens=False)["input_ids"]
        n = 0
        while n < min(len(ta), len(tb)) and ta[n] == tb[n]:
            n += 1
        if n >= len(ta) or n >= len(tb):
            raise SafelabError(
                f"{p.where}: answers {p.matching!r} and {p.not_matching!r} share every token"
            )
        ids = head + list(ta[:n])
        if not ids:
            raise SafelabError(
                f"{p.where}: empty prompt: a pair needs a question under the raw template"
            )
        out.append(ChoicePrompt(ids, int(ta[n]), int(tb[n]), p.where))
    return out


def choice_probs(
    model: WhiteBoxModel, prompts: Sequence[ChoicePrompt], batch_size: int = 16
) -> np.ndarray:
    """``p(match)`` per prompt, normalised over the two candidate tokens.

    Runs the decoder body with right padding and unembeds only the last real position, so a
    batch never materialises ``[batch, pos, vocab]`` logits. Interventions active on ``model``
    (e.g. ``with model.steer(...)``) apply.
    """
    if not prompts:
        raise SafelabError("no prompts to score")
    head = model.hf.get_output_embeddings()
    pad = model.tokenizer.pad_token_id
    out = np.empty(len(prompts))
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i].ids))
    for lo in range(0, len(order), batch_size):
        idx = order[lo : lo + batch_size]
        width = max(len(prompts[i].ids) for i in idx)
        ids = torch.full((len(idx), width), pad, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for b, i in enumerate(idx):
            n = len(prompts[i].ids)
            ids[b, :n] = torch.tensor(prompts[i].ids)
            mask[b, :n] = 1
        last = mask.sum(1) - 1
        with torch.inference_mode():
            hidden = model.body(
                input_ids=ids.to(model.device),
                attention_mask=mask.to(model.device),
                use_cache=False,
            ).last_hidden_state
            h = hidden[torch.arange(len(idx)), last.to(hidden.device)]
            cand = torch.tensor(
                [[prompts[i].match_id, prompts[i].other_id] for i in idx], device=hidden.device
            )
            w = head.weight[cand]  # [b, 2, d]
            logits = torch.einsum("bd,bkd->bk", h.to(w.dtype), w).float()
            if getattr(head, "bias", None) is not None:
                logits = logits + head.bias[cand].float()
            p = torch.softmax(logits, dim=-1)[:, 0].cpu().numpy()
        out[idx] = p
    return out


def contrast_vectors(
    acts: Mapping[str, Tensor],
    data: ContrastSet,
    *,
    method: SteerMethod = "mean_diff",
    model_name: str = "",
    seed: int = 0,
    balance_answers: bool = True,
) -> dict[str, SteeringVector]:
    """A steering vector per site from paired activations (matching minus non-matching).

    With ``balance_answers`` the mean difference is the average of per-answer-group means
    (pairs whose matching answer is ``(A)``, those where it is ``(B)``), so the letter itself
    does not leak into the vector.
    """
    if data.kind != "pairs":
        raise SafelabError(
            f"{data.source}: steering vectors need A/B pairs (a .json/.jsonl of pairs)"
        )
    pos = [i for i, e in enumerate(data.examples) if e.label == 1]
    neg = [i for i, e in enumerate(data.examples) if e.label == 0]
    if [data.examples[i].pair for i in pos] != [data.examples[i].pair for i in neg]:
        raise SafelabError(
            "pair data is not aligned: every pair needs one matching and one other answer"
        )
    # Pairs grouped by their matching answer ("(A)" / "(B)"): each group's mean difference gets
    # equal weight, so the answer letter's own direction cancels when the behaviour-matching
    # letter is unbalanced (62% "(A)" in CAA's survival-instinct set).
    groups: dict[str, list[int]] = {}
    for k, i in enumerate(pos):
        groups.setdefault(data.examples[i].text, []).append(k)
    balanced = balance_answers and len(groups) > 1
    vectors = {}
    for site, x in acts.items():
        kw: dict[str, Any] = {
            "model": model_name,
            "data": data.source,
            "seed": seed,
            "metrics": {
                "n_pairs": len(pos),
                "data_hash": data.data_hash,
                "answer_groups": {g: len(v) for g, v in groups.items()},
                "balanced_answers": balanced,
            },
        }
        xp, xn = x[pos], x[neg]
        if method == "mean_diff":
            if balanced:
                diff = torch.stack([(xp[g] - xn[g]).float().mean(0) for g in groups.values()]).mean(
                    0
                )
                vectors[site] = SteeringVector(
                    SteeringConfig(site=site, d_model=int(diff.shape[0]), method="mean_diff", **kw),
                    diff,
                )
            else:
                vectors[site] = SteeringVector.from_contrast(xp, xn, site, method="mean_diff", **kw)
        elif method == "pca":
            vectors[site] = SteeringVector.from_pca(xp, xn, site, method="pca", **kw)
        else:
            raise SafelabError(f"unknown steering method {method!r}: use mean_diff or pca")
    return vectors


@dataclass
class SteerCell:
    site: str
    scale: float
    p_match: float
    delta: float
    delta_ci: list[float]


@dataclass
class SteerSweepResult:
    baseline_p: float
    baseline_ci: list[float]
    n_test: int
    seed: int
    positions: str
    cells: list[SteerCell] = field(default_factory=list)
    capability: dict[str, Any] = field(default_factory=dict)

    def best(self, direction: int = 1) -> SteerCell:
        """The cell with the largest change toward the behaviour (``direction=-1``: away)."""
        cells = [c for c in self.cells if c.scale != 0]
        if not cells:
            raise SafelabError("the sweep has no non-zero scale")
        return max(cells, key=lambda c: direction * c.delta)

    def to_dict(self) -> dict[str, Any]:
        best = self.best()
        sites: dict[str, Any] = {}
        for c in self.cells:
            sites.setdefault(c.site, {})[f"{c.scale:g}"] = {
                "p_match": c.p_match,
                "delta": c.delta,
                "delta_ci": c.delta_ci,
            }
        return {
            "best_site": best.site,
            "best_scale": best.scale,
            "best_delta": best.delta,
            "best_delta_ci": best.delta_ci,
            "baseline_p_match": self.baseline_p,
            "baseline_p_match_ci": self.baseline_ci,
            "n_test": self.n_test,
            "seed": self.seed,
            "positions": self.positions,
            "sites": sites,
            "capability": self.capability,
            "cells": [asdict(c) for c in self.cells],
        }


def steering_sweep(
    model: WhiteBoxModel,
    vectors: Mapping[str, SteeringVector],
    test: Sequence[ChoicePrompt],
    scales: Sequence[float],
    *,
    positions: Literal["all", "last"] = "all",
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    batch_size: int = 16,
    progress: bool = False,
) -> SteerSweepResult:
    """``Δp(match)`` for every (site, scale) on held-out prompts, paired with the unsteered run."""
    base = choice_probs(model, test, batch_size)
    b_mean, b_lo, b_hi = mean_ci(base, n_resamples=n_resamples, seed=seed)
    result = SteerSweepResult(b_mean, [b_lo, b_hi], len(test), seed, positions)
    for site, vec in vectors.items():
        for scale in scales:
            ctx = (
                resolve_steer(vec, scale=scale, positions=positions, site=site).apply(model)
                if scale
                else nullcontext()
            )
            with ctx:
                p = choice_probs(model, test, batch_size)
            d, lo, hi = mean_ci(p - base, n_resamples=n_resamples, seed=seed)
            result.cells.append(SteerCell(site, float(scale), float(p.mean()), d, [lo, hi]))
            if progress:
                print(
                    f"{site:>24}  scale {scale:+g}  p(match) {p.mean():.3f}  Δp {d:+.3f} [{lo:+.3f}, {hi:+.3f}]",
                    flush=True,
                )
    return result


def capability_cost(
    model: WhiteBoxModel,
    vector: SteeringVector,
    scale: float,
    questions: Sequence[ChoicePrompt],
    *,
    site: str | None = None,
    positions: Literal["all", "last"] = "all",
    seed: int = 0,
    n_resamples: int = DEFAULT_RESAMPLES,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Multiple-choice accuracy with and without steering, and the paired change."""
    base = choice_probs(model, questions, batch_size)
    with resolve_steer(vector, scale=scale, positions=positions, site=site).apply(model):
        steered = choice_probs(model, questions, batch_size)
    acc_b, acc_s = (base > 0.5).astype(float), (steered > 0.5).astype(float)
    kw: dict[str, Any] = {"n_resamples": n_resamples, "seed": seed}
    a_b = mean_ci(acc_b, **kw)
    a_s = mean_ci(acc_s, **kw)
    d = mean_ci(acc_s - acc_b, **kw)
    dp = mean_ci(steered - base, **kw)
    return {
        "site": site or vector.site,
        "scale": scale,
        "n": len(questions),
        "accuracy": a_b[0],
        "accuracy_ci": list(a_b[1:]),
        "steered_accuracy": a_s[0],
        "steered_accuracy_ci": list(a_s[1:]),
        "delta_accuracy": d[0],
        "delta_accuracy_ci": list(d[1:]),
        "delta_p_correct": dp[0],
        "delta_p_correct_ci": list(dp[1:]),
        "seed": seed,
    }
