"""Shared-prefix (cascade) attention: the same attention as over each row's whole sequence."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
import torch

from safelab.models.cascade import Cascade, Group, cascade_attention, cascade_attention_forward
from safelab.models.decode import DecodeBatch, run_rows
from safelab.models.generation import GenerationRequest, generate_batch
from safelab.models.kvcache import PrefixCache
from tests.tiny import tiny_model

OPENING = "You are an assistant. Read the inbox and act on it. From: the board. "
ENDINGS = ["Reply to Kyle.", "Reply to Kyle.", "Reply to all.", "Sum it up."]


def _module(layer: int = 0) -> SimpleNamespace:
    return SimpleNamespace(layer_idx=layer, config=SimpleNamespace(_attn_implementation="sdpa"))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("q_len", [1, 5])
def test_two_part_attention_is_attention_over_prefix_and_own_keys(
    q_len: int, dtype: torch.dtype
) -> None:
    torch.manual_seed(0)
    b, heads, kv_heads, d, own, pre = 4, 6, 2, 16, 7, 11
    q = torch.randn(b, heads, q_len, d).to(dtype)
    k, v = torch.randn(b, kv_heads, own, d).to(dtype), torch.randn(b, kv_heads, own, d).to(dtype)
    pk, pv = torch.randn(1, kv_heads, pre, d).to(dtype), torch.randn(1, kv_heads, pre, d).to(dtype)
    # own part: row 3 has 2 padding positions; queries are the last q_len positions (causal)
    allowed = torch.ones(b, 1, q_len, own, dtype=torch.bool)
    allowed[3, :, :, :2] = False
    for i in range(q_len):
        allowed[:, :, i, own - q_len + i + 1 :] = False
    plan = Cascade([Group(torch.tensor([0, 2]), [(pk, pv)]), Group(torch.tensor([1]), [(pk, pv)])])
    with cascade_attention(SimpleNamespace(config=_module().config), plan):
        out, _ = cascade_attention_forward(_module(), q, k, v, allowed, scaling=0.25)
    rep = heads // kv_heads
    for row in range(b):
        keys, values, mask = k[row : row + 1], v[row : row + 1], allowed[row : row + 1]
        if row != 3:  # rows 0-2 also see the prefix, before their own keys
            keys, values = torch.cat([pk, keys], dim=2), torch.cat([pv, values], dim=2)
            mask = torch.cat([torch.ones(1, 1, q_len, pre, dtype=torch.bool), mask], dim=3)
        ref = torch.nn.functional.scaled_dot_product_attention(
            q[row : row + 1],
            keys.repeat_interleave(rep, dim=1),
            values.repeat_interleave(rep, dim=1),
            attn_mask=mask,
            scale=0.25,
        )
        tol = 1e-6 if dtype == torch.float32 else 2e-2  # bfloat16: 8 bits of mantissa
        assert out.dtype == dtype
        torch.testing.assert_close(out[row], ref[0].transpose(0, 1), atol=tol, rtol=tol)


def test_outside_its_thread_the_model_attends_as_before() -> None:
    model = tiny_model("llama")
    ids = torch.tensor([list(model.tokenizer(OPENING)["input_ids"])])
    with torch.inference_mode():
        plain = model.hf(input_ids=ids).logits
    seen: list[torch.Tensor] = []

    def other() -> None:  # no plan in this thread: the model's own implementation, exactly
        with torch.inference_mode():
            seen.append(model.hf(input_ids=ids).logits)

    pk = torch.zeros(1, 1, 1, 1)
    with cascade_attention(model.hf, Cascade([Group(torch.tensor([0]), [(pk, pk)])])):
        assert model.hf.config._attn_implementation == "safelab_cascade"
        worker = threading.Thread(target=other)
        worker.start()
        worker.join()
    assert model.hf.config._attn_implementation == "sdpa"
    assert torch.equal(seen[0], plain)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_rows_sharing_a_prefix_hold_only_their_own_keys_and_decode_as_the_padded_call(
    family: str,
) -> None:
    model = tiny_model(family)
    texts = [OPENING + e for e in ENDINGS]
    ids = [list(model.tokenizer(t)["input_ids"]) for t in texts]
    req = GenerationRequest(max_new_tokens=8)
    plain = generate_batch(model, texts, req, chat_formatted=[False] * len(texts))
    batch = DecodeBatch(model, PrefixCache(), model.cache_scope())
    rows = batch.add_many(ids, [req] * len(ids))
    live = [r for r in rows if not r.done]
    assert live and all(r.prefix is not None and r.shared > 0 for r in live)
    # one prefix tensor for the rows that share it; the batch holds only what follows it
    assert (
        len(
            {id(r.prefix) for r in live if r.prompt[: r.shared] == live[0].prompt[: live[0].shared]}
        )
        == 1
    )
    assert batch.kv.layers[0].keys.shape[2] < min(len(p) for p in ids) // 2
    while len(batch):
        batch.step()
    assert [r.completion for r in rows] == [r.completion_ids for r in plain]


def test_sampled_rows_with_a_shared_prefix_keep_their_seeds() -> None:
    model = tiny_model("llama")
    ids = [list(model.tokenizer(OPENING + e)["input_ids"]) for e in ENDINGS]
    reqs = [GenerationRequest(max_new_tokens=6, temperature=1.0, seed=s) for s in range(4)]
    alone = [
        run_rows(model, [p], [r], None)[0].completion_ids for p, r in zip(ids, reqs, strict=True)
    ]
    together = run_rows(model, ids, reqs, PrefixCache())
    assert [r.completion_ids for r in together] == alone
