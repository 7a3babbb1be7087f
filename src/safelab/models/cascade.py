"""Shared-prefix ("cascade") attention: rows that start with the same cached prefix read it once.

A decode batch whose rows share a long prompt prefix (an agentic inbox resent for every sample,
a thought-anchor rollout's reasoning so far) used to hold one copy of that prefix's keys and
values per row, and every decode step read all of them: 24 samples of a 1,540-token inbox are
59 MB of keys and values per layer and step, read at memory bandwidth. Here the batch keeps,
per row, only its *own* keys and values (what follows the prefix), and a :class:`Cascade` names
the groups of rows that share one prefix tensor. Attention is computed in two parts and merged
exactly by their log-sum-exp:

* each row's queries against its own keys and values (masked as usual: padding, causal);
* each group's queries, stacked into one query block, against the group's prefix (no mask: a
  prefix precedes everything a row computes).

``softmax`` over the union of the two key sets is ``(w_own * out_own + w_pre * out_pre) /
(w_own + w_pre)`` with ``w = exp(lse - max lse)``: the same attention, summed in a different
order (float32 rounding; the logits agree to 1e-5 on the tiny models, ``tests/unit/
test_cascade.py``). Both parts use ``torch``'s CPU flash-attention kernel, the one
``scaled_dot_product_attention`` dispatches to, which also returns the log-sum-exp.

Usage (explicit, per forward call; :class:`safelab.models.decode.DecodeBatch` does this)::

    with cascade_attention(model.hf, Cascade(groups)):
        out = model.hf(input_ids=..., attention_mask=own_mask, position_ids=..., cache=own_kv)

Inside the block the model's ``config._attn_implementation`` is ``safelab_cascade`` (restored
after). The registered function computes the cascade only for the thread and call that set
it; any other call that reaches it (another thread on the same weights) is handed to the
model's own implementation unchanged.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

NAME = "safelab_cascade"
"""The attention implementation name registered with ``transformers``."""


@dataclass(frozen=True)
class Group:
    """Rows of the batch (``rows``: indices) that share one prefix: ``layers[i]`` is layer
    ``i``'s ``(keys, values)``, each ``[1, kv_heads, prefix length, head_dim]``."""

    rows: Tensor
    layers: Sequence[tuple[Tensor, Tensor]]


@dataclass(frozen=True)
class Cascade:
    """The shared prefixes of one forward call (rows in no group attend to their own part only)."""

    groups: Sequence[Group]


_ACTIVE: contextvars.ContextVar[Cascade | None] = contextvars.ContextVar(
    "safelab_cascade", default=None
)


@contextlib.contextmanager
def cascade_attention(hf: Any, plan: Cascade) -> Iterator[None]:
    """Within the block, ``hf``'s forward calls in this thread attend as ``plan`` says."""
    _register()
    config = hf.config
    before = config._attn_implementation
    if before != NAME:
        config._safelab_attn_before = before
    token = _ACTIVE.set(plan)
    config._attn_implementation = NAME
    try:
        yield
    finally:
        _ACTIVE.reset(token)
        config._attn_implementation = before


@functools.cache
def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, cascade_attention_forward)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def _fallback(module: Any) -> Any:
    """The model's own attention function (what ran before :func:`cascade_attention`)."""
    import sys

    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    before = getattr(module.config, "_safelab_attn_before", None) or "sdpa"
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    return ALL_ATTENTION_FUNCTIONS.get_interface(before, eager or sdpa_attention_forward)


def cascade_attention_forward(
    module: Any,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """The ``transformers`` attention function: ``query [B, heads, q, d]`` against each row's
    own ``key``/``value`` ``[B, kv_heads, k, d]`` and its group's prefix; returns
    ``[B, q, heads, d]`` as ``sdpa_attention_forward`` does."""
    plan = _ACTIVE.get()
    if plan is None or not plan.groups:
        return _fallback(module)(  # type: ignore[no-any-return]
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
    b, heads, q_len, dim = query.shape
    kv_heads = key.shape[1]
    rep = heads // kv_heads
    mask = _additive(attention_mask, query, key)
    # Own part. One query token: the query heads of a key head stacked (no key copies); more:
    # the keys repeated per query head, as transformers' sdpa path does.
    if q_len == 1:
        q_own = query.reshape(b, kv_heads, rep, dim)
        out_own, lse_own = flash(q_own, key, value, attn_mask=mask, scale=scaling)
        out_own = out_own.reshape(b, heads, 1, dim)
        lse_own = lse_own.reshape(b, heads, 1)
    else:
        k_own, v_own = _repeat(key, rep), _repeat(value, rep)
        causal = mask is None and q_len == key.shape[2]
        if mask is None and not causal:
            mask = _bottom_right_causal(q_len, key.shape[2], query)
        out_own, lse_own = flash(
            query, k_own, v_own, is_causal=causal, attn_mask=mask, scale=scaling
        )
    out = out_own
    layer = module.layer_idx
    for group in plan.groups:
        pk, pv = group.layers[layer]
        n = len(group.rows)
        # [n, heads, q, d] -> [1, kv_heads, n * rep * q, d]: every row's queries in one block.
        q_pre = query.index_select(0, group.rows).reshape(n, kv_heads, rep * q_len, dim)
        q_pre = q_pre.transpose(0, 1).reshape(1, kv_heads, n * rep * q_len, dim)
        out_pre, lse_pre = flash(q_pre, pk, pv, scale=scaling)
        out_pre = out_pre.reshape(kv_heads, n, rep * q_len, dim).transpose(0, 1)
        out_pre = out_pre.reshape(n, heads, q_len, dim)
        lse_pre = lse_pre.reshape(kv_heads, n, rep * q_len).transpose(0, 1).reshape(n, heads, q_len)
        o_own, l_own = out_own.index_select(0, group.rows), lse_own.index_select(0, group.rows)
        top = torch.maximum(l_own, lse_pre)
        w_own, w_pre = torch.exp(l_own - top), torch.exp(lse_pre - top)
        merged = (o_own * w_own[..., None] + out_pre * w_pre[..., None]) / (w_own + w_pre)[
            ..., None
        ]
        out.index_copy_(0, group.rows, merged.to(out.dtype))  # the log-sum-exps are float32
    return out.transpose(1, 2).contiguous(), None


def _additive(mask: Tensor | None, query: Tensor, key: Tensor) -> Tensor | None:
    """The mask as the flash kernel takes it: float, 0 where attended, -inf elsewhere; sliced
    to the keys (a static-size mask may be wider), one query row when ``q`` is 1 (broadcast over
    the stacked query heads)."""
    if mask is None:
        return None
    mask = mask[..., : key.shape[2]]
    if mask.dtype == torch.bool:
        mask = torch.zeros(mask.shape, dtype=query.dtype, device=query.device).masked_fill(
            ~mask, float("-inf")
        )
    return mask.to(query.dtype)


def _repeat(t: Tensor, rep: int) -> Tensor:
    if rep == 1:
        return t
    b, h, n, d = t.shape
    return t[:, :, None].expand(b, h, rep, n, d).reshape(b, h * rep, n, d)


def _bottom_right_causal(q_len: int, k_len: int, query: Tensor) -> Tensor:
    """Query ``i`` sees keys up to ``k_len - q_len + i`` (the queries are the last ``q_len``)."""
    i = torch.arange(q_len, device=query.device)[:, None]
    j = torch.arange(k_len, device=query.device)[None, :]
    allowed = j <= i + (k_len - q_len)
    mask = torch.zeros((q_len, k_len), dtype=query.dtype, device=query.device)
    return mask.masked_fill(~allowed, float("-inf"))[None, None]
