"""sample_continuations: the prefix KV cache computed once and shared equals recomputing it."""

import pytest
import torch

from safelab.errors import SafelabError
from safelab.models.generation import GenerationRequest, generate_batch, sample_continuations
from tests.tiny import tiny_model

PROMPTS = [
    "<|im_start|>user\nWhat is two plus two?<|im_end|>\n<|im_start|>assistant\n",
    "<|im_start|>user\nThe quick brown fox.<|im_end|>\n<|im_start|>assistant\nParis is",
]


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_greedy_equals_recompute(family: str) -> None:
    model = tiny_model(family)
    req = GenerationRequest(max_new_tokens=10)
    for text in PROMPTS:
        ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
        shared = sample_continuations(model, ids, 3, req)
        (plain,) = generate_batch(model, [text], req)
        assert plain.prompt_ids == ids
        assert all(r.completion_ids == plain.completion_ids for r in shared)
        assert all(r.text == plain.text and r.finish == plain.finish for r in shared)


def test_cached_logits_equal_recompute() -> None:
    from transformers import DynamicCache

    model = tiny_model("llama")
    ids = torch.tensor([model.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]])
    with torch.inference_mode():
        full = model.hf(input_ids=ids).logits[0, -1]
        cache = DynamicCache(config=model.hf.config)
        model.hf(input_ids=ids[:, :-1], use_cache=True, past_key_values=cache)
        cache.batch_repeat_interleave(4)
        step = model.hf(input_ids=ids[:, -1:].expand(4, 1), past_key_values=cache).logits[:, -1]
    assert torch.allclose(step, full.expand(4, -1), atol=1e-5)


def test_sampling_is_seeded_and_varied() -> None:
    model = tiny_model("llama")
    ids = model.tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
    req = GenerationRequest(max_new_tokens=8, temperature=1.0, top_p=0.95, seed=3)
    a = [r.completion_ids for r in sample_continuations(model, ids, 6, req)]
    b = [r.completion_ids for r in sample_continuations(model, ids, 6, req)]
    assert a == b and len({tuple(x) for x in a}) > 1


def test_bad_arguments() -> None:
    model = tiny_model("llama")
    with pytest.raises(SafelabError, match="at least one"):
        sample_continuations(model, [1, 2], 0, GenerationRequest())
    with pytest.raises(SafelabError, match="empty prefix"):
        sample_continuations(model, [], 2, GenerationRequest())
