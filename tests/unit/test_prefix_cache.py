"""Shared-prefix KV cache and the continuous decode loop on tiny random-weight models."""

from __future__ import annotations

import pytest
import torch

from safelab.errors import SafelabError
from safelab.models.decode import (
    DecodeBatch,
    prefill,
    prefill_group,
    run_rows,
    shared_prefixes,
    suffix_buckets,
)
from safelab.models.generation import GenerationRequest, generate_batch, sample_continuations
from safelab.models.kvcache import PrefixCache, PrefixCacheConfig
from tests.tiny import tiny_model

PROMPTS = [
    "The quick brown fox",
    "The quick brown fox jumps over the lazy",
    "Paris is the capital of",
    "What is two plus two? Two plus two is four. What is",
]


def _ids(model, texts=PROMPTS):  # type: ignore[no-untyped-def]
    return [list(model.tokenizer(t)["input_ids"]) for t in texts]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_cached_prefix_gives_the_logits_of_recomputing(family: str) -> None:
    model = tiny_model(family)
    cache = PrefixCache()
    scope = model.cache_scope()
    short, long = _ids(model)[:2]
    prefill(model, short, cache, scope)
    before = cache.stats.reused_tokens
    kv, logits = prefill(model, long, cache, scope)
    assert cache.stats.reused_tokens - before == len(short)  # the shared prefix was reused
    with torch.inference_mode():
        full = model.hf(input_ids=torch.tensor([long]), use_cache=True)
    assert logits is not None
    torch.testing.assert_close(logits, full.logits[0, -1].float(), atol=1e-5, rtol=1e-5)
    ref = full.past_key_values if hasattr(full, "past_key_values") else full.cache
    ref = getattr(full, "cache", None) or ref
    for mine, theirs in zip(kv.layers, ref.layers, strict=True):
        torch.testing.assert_close(mine.keys, theirs.keys, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_greedy_tokens_match_the_padded_generate_call(family: str) -> None:
    model = tiny_model(family)
    req = GenerationRequest(max_new_tokens=10, stop=("fox",), logprobs=True, top_logprobs=2)
    flags = [False] * len(PROMPTS)
    plain = generate_batch(model, PROMPTS, req, chat_formatted=flags)
    cache = PrefixCache()
    first = generate_batch(model, PROMPTS, req, chat_formatted=flags, cache=cache)
    again = generate_batch(model, PROMPTS, req, chat_formatted=flags, cache=cache)
    assert cache.stats.reused_tokens > 0
    for a, b, c in zip(plain, first, again, strict=True):
        assert a.completion_ids == b.completion_ids == c.completion_ids
        assert a.text == b.text == c.text and a.finish == b.finish == c.finish
        assert a.logprobs is not None and b.logprobs is not None
        assert [t.token for t in a.logprobs] == [t.token for t in b.logprobs]
        for x, y in zip(a.logprobs, b.logprobs, strict=True):
            assert x.logprob == pytest.approx(y.logprob, abs=1e-4)


def test_rows_join_and_leave_a_running_batch_with_their_own_settings() -> None:
    model = tiny_model("llama")
    ids = _ids(model)
    short, long = GenerationRequest(max_new_tokens=3), GenerationRequest(max_new_tokens=9)
    alone = [generate_batch(model, [p], long, [False])[0] for p in PROMPTS]
    batch = DecodeBatch(model, PrefixCache(), model.cache_scope())
    rows = [batch.add(ids[0], long), batch.add(ids[1], short)]
    sizes = []
    for _ in range(2):
        sizes.append(len(batch))
        batch.step()
    rows += [batch.add(ids[2], long), batch.add(ids[3], long)]  # join mid-decode
    while len(batch):
        sizes.append(len(batch))
        batch.step()
    assert sizes[:3] == [2, 2, 3]  # the short row left before the two joined
    assert rows[1].completion == alone[1].completion_ids[:3]
    for i in (0, 2, 3):
        assert rows[i].completion == alone[i].completion_ids


def test_the_cache_is_bounded_and_evicts_least_recently_used() -> None:
    model = tiny_model("llama")
    probe = PrefixCache()
    prefill(model, _ids(model)[0], probe, "s")
    one = probe.nbytes
    cache = PrefixCache(PrefixCacheConfig(max_mb=2.5 * one / 2**20))
    a, b, c = (_ids(model, [f"{w} is the capital of France."])[0] for w in ("Paris", "Two", "I"))
    for ids in (a, b, c):
        prefill(model, ids, cache, "s")
        assert cache.nbytes <= cache.max_bytes
    assert cache.stats.evictions >= 1
    assert cache.lookup("s", a, len(a))[0] < len(a)  # the oldest went first
    assert cache.lookup("s", c, len(c))[0] == len(c)
    # An entry that is a prefix of a newer one is dropped: the newer one serves it.
    whole = PrefixCache()
    short, long = _ids(model)[:2]
    prefill(model, short, whole, "s")
    prefill(model, long, whole, "s")
    assert len(whole) == 1 and whole.lookup("s", short, len(short))[0] == len(short)
    with pytest.raises(SafelabError, match="max_mb"):
        PrefixCacheConfig(max_mb=0)


def test_interventions_are_part_of_the_key() -> None:
    model = tiny_model("llama")
    vector = torch.randn(model.d_model) * 3
    req = GenerationRequest(max_new_tokens=8)
    plain_scope = model.cache_scope()
    with model.steer(vector, "blocks.1.resid_post"):
        steered_scope = model.cache_scope()
        steered_ref = generate_batch(model, PROMPTS, req, [False] * 4)
    with model.steer(vector * 2, "blocks.1.resid_post"):
        assert model.cache_scope() not in (plain_scope, steered_scope)
    with model.ablate(vector, "blocks.0.resid_post"):
        assert model.cache_scope() not in (plain_scope, steered_scope, None)
    assert steered_scope != plain_scope
    cache = PrefixCache()
    plain = generate_batch(model, PROMPTS, req, [False] * 4, cache=cache)
    with model.steer(vector, "blocks.1.resid_post"):
        steered = generate_batch(model, PROMPTS, req, [False] * 4, cache=cache)
    assert [r.completion_ids for r in steered] == [r.completion_ids for r in steered_ref]
    assert [r.completion_ids for r in steered] != [r.completion_ids for r in plain]
    # Steering only the last position depends on how the prompt is split: nothing it computes
    # is kept whole, but it reads (and adds) the plain model's prefixes.
    with model.steer(vector, "blocks.1.resid_post", positions="last"):
        assert model.cache_scope() is None and model.prefix_scope() == plain_scope
        assert model.acts_at_last
        last_ref = generate_batch(model, PROMPTS, req, [False] * 4)
        reused = cache.stats.reused_tokens
        last = generate_batch(model, PROMPTS, req, [False] * 4, cache=cache)
        assert cache.stats.reused_tokens > reused
    assert [r.completion_ids for r in last] == [r.completion_ids for r in last_ref]
    assert [r.completion_ids for r in last] != [r.completion_ids for r in plain]


def _assert_entries_are_unhooked(model, cache) -> None:  # type: ignore[no-untyped-def]
    """Every stored entry holds the keys and values one unhooked forward pass over its own
    tokens computes."""
    for entry in cache._entries.values():
        with torch.inference_mode():
            full = model.hf(input_ids=entry.ids[None], use_cache=True)
        ref = getattr(full, "cache", None) or full.past_key_values
        for (k, v), layer in zip(entry.kv, ref.layers, strict=True):
            torch.testing.assert_close(k, layer.keys, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(v, layer.values, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_last_position_steering_shares_the_plain_models_prefixes_exactly(family: str) -> None:
    model = tiny_model(family)
    vector = torch.randn(model.d_model) * 3
    req = GenerationRequest(max_new_tokens=8)
    flags = [False] * len(GROUP)
    site = "blocks.1.resid_post"
    with model.steer(vector, site, positions="last"):
        ref = generate_batch(model, GROUP, req, flags)  # one padded generate call, no cache
    cache = PrefixCache()
    # Cold: the group's shared prefix is computed once (with the steering suspended), then the
    # suffixes; warm: every prompt reads its cached prefix, its last token steered.
    for _ in range(2):
        with model.steer(vector, site, positions="last"):
            got = generate_batch(model, GROUP, req, flags, cache=cache)
        assert [r.completion_ids for r in got] == [r.completion_ids for r in ref]
        _assert_entries_are_unhooked(model, cache)
    assert cache.stats.reused_tokens > 0
    ids = _ids(model, GROUP)
    assert all(len(e.ids) < max(map(len, ids)) for e in cache._entries.values())
    # The plain model reads what the steered runs stored and still gives its own tokens.
    plain_ref = generate_batch(model, GROUP, req, flags)
    plain = generate_batch(model, GROUP, req, flags, cache=cache)
    assert [r.completion_ids for r in plain] == [r.completion_ids for r in plain_ref]
    assert [r.completion_ids for r in plain] != [r.completion_ids for r in got]
    # Resampling one prefix: cached, uncached and the padded call agree under the steering.
    prefix = ids[3]
    with model.steer(vector, site, positions="last"):
        (whole,) = generate_batch(model, [GROUP[3]], req, [False])
        for c in (None, cache):
            (one,) = sample_continuations(model, prefix, 1, req, cache=c)
            assert one.completion_ids == whole.completion_ids
    _assert_entries_are_unhooked(model, cache)


def test_opaque_hooks_and_changed_weights_are_never_served_from_the_cache() -> None:
    model = tiny_model("llama")
    scope = model.cache_scope()
    module = model.resolved_site("blocks.1.resid_post").point.module
    handle = module.register_forward_hook(lambda m, a, o: None)
    try:
        assert model.intervention_key() is None and model.cache_scope() is None
    finally:
        handle.remove()
    assert model.cache_scope() == scope
    with torch.no_grad():
        next(model.hf.parameters()).mul_(1.01)  # an optimizer step, in place
    assert model.cache_scope() != scope


def test_model_generate_and_sample_continuations_use_the_models_cache() -> None:
    model = tiny_model("llama")
    chats = [[{"role": "user", "content": p}] for p in PROMPTS]
    plain = model.generate(chats, max_new_tokens=6)
    cache = model.use_prefix_cache(PrefixCacheConfig(max_mb=64))
    assert cache is not None
    assert model.generate(chats, max_new_tokens=6) == plain
    assert cache.stats.computed_tokens > 0 and len(cache) == len(chats)
    assert model.generate(chats, max_new_tokens=6) == plain
    assert cache.stats.reused_tokens > 0  # the second call reuses the first's prompts
    prefix = _ids(model)[1]
    req = GenerationRequest(max_new_tokens=5)
    ref = [r.completion_ids for r in sample_continuations(model, prefix, 2, req, cache=None)]
    model.use_prefix_cache(None)
    assert [r.completion_ids for r in sample_continuations(model, prefix, 2, req)] == ref


def test_rows_ended_by_end_of_turn_store_aligned_keys_and_values() -> None:
    model = tiny_model("llama")
    req = GenerationRequest(max_new_tokens=8)
    flags = [False] * len(PROMPTS)
    first = generate_batch(model, PROMPTS, req, chat_formatted=flags)
    # Make a token the rows produce an end-of-turn token, so rows end early, at different steps.
    model.hf.generation_config.eos_token_id = first[0].completion_ids[2]
    model._decode_supported = None  # type: ignore[attr-defined]
    plain = generate_batch(model, PROMPTS, req, chat_formatted=flags)
    assert any(r.finish == "stop" for r in plain) and any(r.finish != "stop" for r in plain)
    cache = PrefixCache()
    got = generate_batch(model, PROMPTS, req, chat_formatted=flags, cache=cache)
    assert [r.completion_ids for r in got] == [r.completion_ids for r in plain]
    # Every stored entry (prompt + completion of a finished row) holds the keys and values of
    # its own tokens, as one forward pass over them computes.
    assert len(cache) == len(PROMPTS)
    _assert_entries_are_unhooked(model, cache)


SHARED = "The quick brown fox jumps over the lazy dog. Paris is the capital of France. "
GROUP = [
    SHARED + "What is two plus two?",
    SHARED + "Two plus two is four. What is",
    "Paris is the capital of",  # shares nothing long with the rest
    SHARED + "Berlin is the capital of Germany. Safety researchers probe models for",
    "I will not help with that request",
]


def test_shared_prefixes_are_the_ones_worth_computing_once() -> None:
    base = list(range(100, 180))
    prompts = [[*base, 1, 2], [*base, 3], [7, 8, 9], [*base[:5], 4]]
    assert shared_prefixes(prompts, [0, 0, 0, 0]) == [base]
    assert shared_prefixes(prompts, [80, 80, 0, 0]) == []  # already cached
    assert shared_prefixes([[1, 2, 3], [1, 2, 4]], [0, 0]) == []  # saves too little
    assert shared_prefixes([base], [0]) == []
    # A longer prefix that adds a token or two to a kept one is not worth its own call.
    four = [[*base, 5, 6, 1], [*base, 5, 6, 2], [*base, 7, 1], [*base, 8, 1]]
    assert shared_prefixes(four, [0] * 4) == [base]


@pytest.mark.parametrize("family", ["llama", "gpt2"])
@pytest.mark.parametrize("mode", ["cache", "group_only", "no_split"])
def test_group_prefill_gives_each_prompts_own_logits_and_keys(family: str, mode: str) -> None:
    model = tiny_model(family)
    ids = _ids(model, GROUP)
    cache = PrefixCache() if mode == "cache" else None
    scope = None if mode == "no_split" else model.cache_scope()
    if cache is not None:
        prefill(model, ids[2], cache, scope)  # one prompt partly cached before
    kv, logits = prefill_group(model, ids, cache, scope)
    width = max(len(p) for p in ids)
    for b, p in enumerate(ids):
        with torch.inference_mode():
            full = model.hf(input_ids=torch.tensor([p]), use_cache=True)
        ref = getattr(full, "cache", None) or full.past_key_values
        torch.testing.assert_close(logits[b], full.logits[0, -1].float(), atol=1e-5, rtol=1e-5)
        for (k, v), layer in zip(kv, ref.layers, strict=True):
            torch.testing.assert_close(
                k[b : b + 1, :, width - len(p) :], layer.keys, atol=1e-5, rtol=1e-5
            )
            torch.testing.assert_close(
                v[b : b + 1, :, width - len(p) :], layer.values, atol=1e-5, rtol=1e-5
            )
    if cache is not None:
        shared = len(_ids(model, [SHARED])[0])
        # the shared opening computed once, not once per prompt that starts with it
        assert cache.stats.computed_tokens <= sum(map(len, ids)) - 2 * (shared - 2)
        for p in ids:  # every prompt stored
            assert cache.peek(scope, p, len(p)) == len(p)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_rows_added_together_decode_as_the_padded_call(family: str) -> None:
    model = tiny_model(family)
    req = GenerationRequest(max_new_tokens=8)
    plain = generate_batch(model, GROUP, req, chat_formatted=[False] * len(GROUP))
    ids = _ids(model, GROUP)
    for cache, scope in (
        (PrefixCache(), model.cache_scope()),
        (None, model.cache_scope()),
        (None, None),
    ):
        batch = DecodeBatch(model, cache, scope)
        first = batch.add(ids[0], req)  # one running row, then the rest join together
        batch.step()
        rows = [first, *batch.add_many(ids[1:], [req] * (len(ids) - 1))]
        while len(batch):
            batch.step()
        assert [r.completion for r in rows] == [r.completion_ids for r in plain]


def test_sampled_rows_added_together_keep_their_own_seeds() -> None:
    model = tiny_model("llama")
    ids = _ids(model, GROUP)
    reqs = [
        GenerationRequest(max_new_tokens=6, temperature=1.0, seed=s)
        if s is not None
        else GenerationRequest(max_new_tokens=6)
        for s in (1, None, 2, 3, None)
    ]
    alone = []
    for p, r in zip(ids, reqs, strict=True):
        (res,) = run_rows(model, [p], [r], PrefixCache())
        alone.append(res.completion_ids)
    together = run_rows(model, ids, reqs, PrefixCache())
    assert [r.completion_ids for r in together] == alone
    again = run_rows(model, ids, reqs, None)
    assert [r.completion_ids for r in again] == alone


def test_suffixes_of_very_different_lengths_prefill_in_separate_calls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import safelab.models.decode as decode

    assert suffix_buckets([244, 1286, 451, 249]) == [[0, 3], [2], [1]]
    assert suffix_buckets([10, 12, 9, 13]) == [[0, 1, 2, 3]]
    assert suffix_buckets([5]) == [[0]]
    model = tiny_model("llama")
    ids = _ids(model, GROUP)
    seen: list[list[list[int]]] = []

    def every_size_alone(sizes: list[int]) -> list[list[int]]:
        seen.append(suffix_buckets(sizes, call=0))
        return seen[-1]

    monkeypatch.setattr(decode, "suffix_buckets", every_size_alone)
    kv, logits = prefill_group(model, ids, PrefixCache(), model.cache_scope())
    assert len(seen[0]) > 2  # several calls, merged back in prompt order
    monkeypatch.undo()
    ref_kv, ref_logits = prefill_group(model, ids, None, None)  # whole prompts, one call
    torch.testing.assert_close(logits, ref_logits, atol=1e-5, rtol=1e-5)
    for (k, v), (rk, rv) in zip(kv, ref_kv, strict=True):
        for b, p in enumerate(ids):
            w = k.shape[2] - len(p)
            torch.testing.assert_close(k[b, :, w:], rk[b, :, w:], atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(v[b, :, w:], rv[b, :, w:], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_a_stop_string_late_in_a_long_completion_stops_as_the_padded_call(family: str) -> None:
    model = tiny_model(family)
    flags = [False] * len(PROMPTS)
    free = generate_batch(model, PROMPTS, GenerationRequest(max_new_tokens=24), flags)
    row = max(free, key=lambda r: len(set(r.completion_ids)))
    half = len(row.completion_ids) // 2
    stop = row.text[len(model.tokenizer.decode(row.completion_ids[:half])) :][:4]
    assert half >= 4 and stop.strip(), row.completion_ids
    req = GenerationRequest(max_new_tokens=24, stop=(stop,))
    plain = generate_batch(model, PROMPTS, req, flags)
    ours = generate_batch(model, PROMPTS, req, flags, cache=PrefixCache())
    assert any(r.finish == "stop" for r in plain)
    pad = model.tokenizer.pad_token_id
    for a, b in zip(plain, ours, strict=True):
        ids = list(a.completion_ids)
        while ids and ids[-1] == pad:  # generate pads a row that stopped before the others
            ids.pop()
        assert (ids, a.text, a.finish) == (b.completion_ids, b.text, b.finish)


def test_rows_leave_after_the_cache_outgrew_its_spare_room() -> None:
    """Room that doubles during a decode step is made inside inference mode; rows leaving
    afterwards move within it (a run of agentic_misalignment failed here: in-place update
    to an inference tensor)."""
    model = tiny_model("llama")
    ids = _ids(model)
    lengths = [70, 90, 75, 100]  # past the 64 spare positions; the first leaves first
    reqs = [GenerationRequest(max_new_tokens=n) for n in lengths]
    alone = [generate_batch(model, [p], r, [False])[0] for p, r in zip(PROMPTS, reqs, strict=True)]
    batch = DecodeBatch(model, PrefixCache(), model.cache_scope())
    rows = batch.add_many(ids, reqs)
    while len(batch):
        batch.step()
    for row, ref in zip(rows, alone, strict=True):
        assert row.completion == ref.completion_ids


def test_release_caches_empties_every_other_models_cache() -> None:
    from safelab.provider.batcher import release_caches, shared_batcher

    a, b = tiny_model("llama"), tiny_model("llama")
    ba = shared_batcher(a, 4, PrefixCacheConfig(max_mb=16))
    bb = shared_batcher(b, 4, PrefixCacheConfig(max_mb=16))
    for model, batcher in ((a, ba), (b, bb)):
        assert batcher.cache is not None
        prefill(model, _ids(model)[1], batcher.cache, model.cache_scope())
        assert len(batcher.cache) == 1
    assert release_caches(keep=a) >= 1
    assert ba.cache is not None and len(ba.cache) == 1  # kept
    assert bb.cache is not None and len(bb.cache) == 0  # emptied
