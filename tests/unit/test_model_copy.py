"""A WhiteBoxModel copies (``copy.deepcopy``) like the transformers model it wraps."""

from __future__ import annotations

import copy
from typing import Any

import torch

from safelab.models.kvcache import PrefixCacheConfig


def test_a_deep_copy_is_independent_and_keeps_working(tiny_model: Any) -> None:
    tiny_model.use_prefix_cache(PrefixCacheConfig(max_mb=8))
    ids = torch.tensor([[1, 5, 7, 9]])
    twin = copy.deepcopy(tiny_model)
    assert twin.hf is not tiny_model.hf
    assert twin.prefix_cache is not tiny_model.prefix_cache and len(twin.prefix_cache) == 0
    assert twin.prefix_cache.cfg == tiny_model.prefix_cache.cfg
    with torch.no_grad():
        before = tiny_model.hf(ids).logits
        assert torch.equal(twin.hf(ids).logits, before)
        with twin.prefix_pass():  # the copy has its own per-thread state
            assert twin._prefix_state.depth == 1
            assert getattr(tiny_model._prefix_state, "depth", 0) == 0
        for p in twin.hf.parameters():
            p.add_(1.0)
        assert torch.equal(tiny_model.hf(ids).logits, before)
