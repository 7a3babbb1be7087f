"""White-box views of one trace: sentence attention per head, receiver heads, suppression.

The trace is rendered as the model reads it (prompt, reasoning, answer line) and cut into
segments: the reasoning's sentences ``0..n-1`` and the answer line ``n``.

- :func:`sentence_attention`: ``[layers, heads, n+1, n+1]``, the mean attention weight from the
  tokens of segment ``i`` (queries) to those of segment ``j`` (keys), eager attention.
- :func:`receiver_scores`: for each head, the *vertical score* of sentence ``j`` (mean attention
  it receives from segments at least ``proximity`` later, the answer line always included), the
  head's kurtosis of those scores over sentences, and the mean vertical score over the ``top_k``
  heads of highest kurtosis (receiver heads): a sentence's receiver importance.
- :func:`suppression_matrix`: mask sentence ``i``'s keys for every later query in every layer and
  head (an additive ``-inf`` in a 4-D attention mask) and take the KL of the next-token
  distribution at each later token, averaged per segment: ``M[i, j]``. Suppression importance
  of ``i`` is the mean of ``M[i, j]`` over later segments ``j`` (the answer line included);
  its *answer suppression* is the KL of the answer distribution over the answer categories where
  the answer value is predicted (what masking ``i`` does to the answer, not to later text).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from safelab.anchors.traces import ANSWER_PREFIX, Trace
from safelab.errors import SafelabError

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel


@dataclass
class Segmented:
    """The token ids of a rendered trace and each segment's token range ``[start, end)``."""

    ids: list[int]
    segments: list[tuple[int, int]]
    answer_token: int = -1
    """Index of the first token of the answer value (after ``Answer:``); its prediction is made
    at ``answer_token - 1``."""


def segment_trace(model: WhiteBoxModel, trace: Trace) -> Segmented:
    full = trace.full_text()
    msgs = [*trace.messages(), {"role": "assistant", "content": full}]
    text = model.render_chat(msgs, continue_final_message=True)
    base = text.rfind(full)
    if base < 0:
        raise SafelabError(f"trace {trace.id!r}: the chat template changed the reasoning text")
    spans = [(base + a, base + b) for a, b in trace.spans]
    answer_start = base + len(trace.reasoning.rstrip()) + 1
    spans.append((answer_start, base + len(full)))
    value_start = answer_start + len(ANSWER_PREFIX) + 1
    enc = model.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    offsets = enc["offset_mapping"]
    segments = []
    for a, b in spans:
        toks = [t for t, (s, e) in enumerate(offsets) if e > a and s < b]
        if not toks:
            raise SafelabError(f"trace {trace.id!r}: a sentence has no tokens")
        segments.append((toks[0], toks[-1] + 1))
    value = [t for t, (s, e) in enumerate(offsets) if e > value_start]
    return Segmented(list(enc["input_ids"]), segments, value[0] if value else -1)


@contextmanager
def eager_attention(model: WhiteBoxModel) -> Iterator[None]:
    """Switch the model to eager attention (which returns weights and takes 4-D masks)."""
    hf = model.hf
    before = getattr(hf.config, "_attn_implementation", None)
    try:
        if before != "eager":
            hf.set_attn_implementation("eager")
        yield
    finally:
        if before and before != "eager":
            hf.set_attn_implementation(before)


def _attention_modules(model: WhiteBoxModel) -> list[Any]:
    mods = [m for n, m in model.hf.named_modules() if n.endswith(".self_attn")]
    if not mods:
        mods = [m for n, m in model.hf.named_modules() if n.endswith(".attn")]
    if len(mods) != model.n_layers:
        raise SafelabError(
            f"{model.name}: found {len(mods)} attention modules for {model.n_layers} layers"
        )
    return mods


def _pool(segments: list[tuple[int, int]], length: int) -> torch.Tensor:
    """``[n_seg, T]`` rows averaging each segment's tokens."""
    pool = torch.zeros(len(segments), length)
    for s, (a, b) in enumerate(segments):
        pool[s, a:b] = 1.0 / (b - a)
    return pool


def sentence_attention(model: WhiteBoxModel, seg: Segmented) -> np.ndarray:
    """``[layers, heads, n_seg, n_seg]`` mean attention from segment ``i`` to segment ``j``."""
    pool = _pool(seg.segments, len(seg.ids))
    out: list[torch.Tensor | None] = [None] * model.n_layers

    def hook(layer: int) -> Any:
        def fn(_m: Any, _args: Any, output: Any) -> None:
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise SafelabError(
                    f"{model.name}: attention weights unavailable (needs eager attention)"
                )
            w = weights[0].float().cpu()
            out[layer] = torch.einsum("it,htu,ju->hij", pool, w, pool)

        return fn

    handles = [m.register_forward_hook(hook(i)) for i, m in enumerate(_attention_modules(model))]
    try:
        with eager_attention(model), torch.inference_mode():
            model.hf(input_ids=torch.tensor([seg.ids], device=model.device))
    finally:
        for h in handles:
            h.remove()
    return torch.stack([o for o in out if o is not None]).numpy()


def vertical_scores(att: np.ndarray, proximity: int) -> np.ndarray:
    """``[layers, heads, n]`` mean attention sentence ``j`` receives from segments ``>= j+proximity``.

    The answer line (the last segment) always counts as a receiver of every sentence.
    """
    n_seg = att.shape[-1]
    n = n_seg - 1
    out = np.full((*att.shape[:2], n), np.nan)
    for j in range(n):
        rows = [i for i in range(j + 1, n_seg) if i - j >= proximity or i == n]
        out[..., j] = att[..., rows, j].mean(-1)
    return out


def kurtosis(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Fisher (excess) kurtosis along ``axis``; 0 for a constant row."""
    m = x.mean(axis, keepdims=True)
    d = x - m
    v = (d**2).mean(axis)
    k4 = (d**4).mean(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(v > 0, k4 / np.maximum(v, 1e-30) ** 2 - 3.0, 0.0)
    return np.asarray(k)


def receiver_scores(
    att: np.ndarray, proximity: int = 2, top_k: int = 16
) -> tuple[np.ndarray, list[tuple[int, int]], np.ndarray]:
    """``(receiver score per sentence, top heads as (layer, head), kurtosis [layers, heads])``."""
    vert = vertical_scores(att, proximity)
    kurt = kurtosis(vert)
    flat = np.argsort(-kurt, axis=None)[: min(top_k, kurt.size)]
    heads = [(int(i // kurt.shape[1]), int(i % kurt.shape[1])) for i in flat]
    score = np.mean([vert[layer, head] for layer, head in heads], axis=0)
    return score, heads, kurt


def suppression_matrix(
    model: WhiteBoxModel, seg: Segmented, categories: list[list[int]] | None = None
) -> np.ndarray:
    """``[n, n_seg]``: KL (nats) at segment ``j``'s tokens when sentence ``i``'s keys are masked.

    Entries with ``j <= i`` are 0 by causality (asserted by a test, not assumed here). With
    ``categories`` (each answer category's tokens after ``Answer:``), a last column is added:
    the KL of the answer distribution over the categories (each scored by all its tokens, in
    place of the trace's answer value), ``[n, n_seg + 1]`` (see :func:`answer_suppression`).
    """
    T = len(seg.ids)
    at = seg.answer_token
    if categories is not None and at < seg.segments[-1][0]:
        raise SafelabError("the answer value has no token after 'Answer:'")
    single = categories is None or all(len(c) == 1 for c in categories)
    # Row 0 is the trace; with multi-token categories, one more row per category whose answer
    # value is replaced by it (right-padded: causal attention keeps the padding out).
    rows = [seg.ids] if single else [seg.ids] + [seg.ids[:at] + c for c in categories or []]
    width = max(len(r) for r in rows)
    ids = torch.tensor([r + [r[-1]] * (width - len(r)) for r in rows], device=model.device)
    dtype = model.dtype
    neg = torch.finfo(dtype).min
    causal = torch.full((width, width), neg, dtype=dtype).triu(1)
    n = len(seg.segments) - 1
    M = np.zeros((n, n + 1 + (categories is not None)))

    def answer_logp(logp: torch.Tensor) -> torch.Tensor:
        assert categories is not None
        if single:
            return torch.log_softmax(logp[0, at - 1, [c[0] for c in categories]], -1)
        s = torch.stack(
            [
                logp[b + 1, torch.arange(len(c)) + at - 1, torch.tensor(c)].sum()
                for b, c in enumerate(categories)
            ]
        )
        return torch.log_softmax(s, -1)

    with eager_attention(model), torch.inference_mode():
        base = torch.log_softmax(
            model.hf(
                input_ids=ids, attention_mask=causal[None, None].to(model.device)
            ).logits.float(),
            -1,
        )
        for i in range(n):
            a, b = seg.segments[i]
            mask = causal.clone()
            mask[b:, a:b] = neg
            logp = torch.log_softmax(
                model.hf(
                    input_ids=ids, attention_mask=mask[None, None].to(model.device)
                ).logits.float(),
                -1,
            )
            # KL(orig || suppressed) of the prediction of each token (made at the one before).
            per_tok = (base[0, :T].exp() * (base[0, :T] - logp[0, :T])).sum(-1).clamp(min=0).cpu()
            for j, (c, d) in enumerate(seg.segments):
                M[i, j] = float(per_tok[c - 1 : d - 1].mean())
            if categories is not None:
                p, q = answer_logp(base), answer_logp(logp)
                M[i, n + 1] = float((p.exp() * (p - q)).sum().clamp(min=0))
    return M


def suppression_importance(M: np.ndarray) -> np.ndarray:
    """Mean of ``M[i, j]`` over the later segments ``j > i`` (the answer line included)."""
    n = M.shape[0]
    return np.array([M[i, i + 1 : n + 1].mean() for i in range(n)])


def answer_suppression(M: np.ndarray) -> np.ndarray:
    """What masking sentence ``i`` does to the answer itself: the KL of the distribution over
    the answer categories where the answer value is predicted (the extra column of
    :func:`suppression_matrix` given ``candidates``). The mean over every later token (the
    paper's readout) mostly measures how later *text* leans on a sentence."""
    return np.asarray(M[:, -1])
