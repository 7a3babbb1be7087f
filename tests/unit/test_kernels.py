"""The oneDNN-packed linear kernel: same outputs as F.linear, repacked when weights change,
never used where a gradient or training is wanted, and greedy generation unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from safelab import SafelabError
from safelab.models.generation import GenerationRequest, generate_batch
from safelab.models.kernels import (
    PackedLinear,
    linear_kernel,
    onednn_available,
    resolve_linear_kernel,
    set_linear_kernel,
    steady_weights,
)
from safelab.models.kvcache import PrefixCache
from tests.tiny import tiny_model as build

pytestmark = pytest.mark.skipif(not onednn_available(), reason="torch without oneDNN")

PROMPTS = ["The quick brown fox", "Paris is the capital of", "What is two plus two?"]


def _logits(model: object, text: str) -> torch.Tensor:
    ids = model.tokenizer([text, text + " and"], return_tensors="pt", padding=True)  # type: ignore[attr-defined]
    with torch.no_grad():
        return model.hf(**ids).logits  # type: ignore[attr-defined]


def test_packed_logits_match_torch_and_modules_are_the_same_objects() -> None:
    model = build("llama")
    before = {n: id(m) for n, m in model.hf.named_modules()}
    keys = list(model.hf.state_dict())
    ref = _logits(model, PROMPTS[0])
    assert model.use_linear_kernel("onednn") == "onednn"
    assert model.linear_kernel == "onednn"
    assert {n: id(m) for n, m in model.hf.named_modules()} == before
    assert list(model.hf.state_dict()) == keys
    got = _logits(model, PROMPTS[0])
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)
    packed = [m for m in model.hf.modules() if isinstance(m, PackedLinear)]
    assert packed and all(m._packed is not None for m in packed)  # the packed path ran
    assert isinstance(packed[0], torch.nn.Linear)
    assert model.use_linear_kernel("torch") == "torch"
    assert not any(isinstance(m, PackedLinear) for m in model.hf.modules())
    assert all(
        type(m) is torch.nn.Linear for m in model.hf.modules() if isinstance(m, torch.nn.Linear)
    )
    torch.testing.assert_close(_logits(model, PROMPTS[0]), ref, atol=0, rtol=0)


def test_hooks_still_fire_on_packed_layers() -> None:
    model = build("llama")
    model.use_linear_kernel("onednn")
    seen: list[tuple[int, ...]] = []
    layer = model.hf.model.layers[0].mlp.down_proj
    handle = layer.register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    try:
        _logits(model, PROMPTS[1])
    finally:
        handle.remove()
    assert seen and seen[0][-1] == model.d_model
    site = "blocks.1.resid_post"
    plain = build("llama")
    a = model.capture(PROMPTS, site)[site]
    b = plain.capture(PROMPTS, site)[site]
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)


def test_weight_edits_repack_including_through_data() -> None:
    model = build("llama")
    model.use_linear_kernel("onednn")
    _logits(model, PROMPTS[0])  # pack
    layer = model.hf.model.layers[1].self_attn.o_proj
    with torch.no_grad():
        layer.weight.mul_(0.5)  # in place: bumps the version counter
    ref = build("llama")
    with torch.no_grad():
        ref.hf.model.layers[1].self_attn.o_proj.weight.mul_(0.5)
    torch.testing.assert_close(
        _logits(model, PROMPTS[0]), _logits(ref, PROMPTS[0]), atol=1e-5, rtol=1e-5
    )
    # an edit through .data (peft's unsafe merge) leaves the version counter alone
    delta = torch.randn_like(layer.weight) * 0.1
    layer.weight.data += delta
    ref.hf.model.layers[1].self_attn.o_proj.weight.data += delta
    torch.testing.assert_close(
        _logits(model, PROMPTS[0]), _logits(ref, PROMPTS[0]), atol=1e-5, rtol=1e-5
    )
    # the weight replaced outright (new storage)
    new = torch.nn.Parameter(torch.randn_like(layer.weight))
    layer.weight = new
    ref.hf.model.layers[1].self_attn.o_proj.weight = torch.nn.Parameter(new.detach().clone())
    torch.testing.assert_close(
        _logits(model, PROMPTS[0]), _logits(ref, PROMPTS[0]), atol=1e-5, rtol=1e-5
    )


def test_steady_weights_skips_only_the_sample_comparison() -> None:
    model = build("llama")
    model.use_linear_kernel("onednn")
    before = _logits(model, PROMPTS[0])  # pack
    layer = model.hf.model.layers[1].self_attn.o_proj
    packed = layer._packed
    with steady_weights():
        assert torch.equal(_logits(model, PROMPTS[0]), before)  # the same packed copy, same result
        assert layer._packed is packed
        # a .data edit leaves storage and version alone: inside, it is trusted not to happen
        layer.weight.data += 0.1
        _logits(model, PROMPTS[0])
        assert layer._packed is packed
        with torch.no_grad():
            layer.weight.mul_(1.0)  # an in-place edit bumps the version: repacked even inside
        _logits(model, PROMPTS[0])
        assert layer._packed is not packed
    packed = layer._packed
    layer.weight.data += 0.1  # outside, the sample comparison sees a .data edit again
    _logits(model, PROMPTS[0])
    assert layer._packed is not packed


def test_peft_merge_on_a_packed_model() -> None:
    from peft import LoraConfig, get_peft_model

    model, ref = build("llama"), build("llama")
    model.use_linear_kernel("onednn")
    _logits(model, PROMPTS[0])  # pack before the adapter exists
    cfg = LoraConfig(
        r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    torch.manual_seed(1)
    merged = get_peft_model(model.hf, cfg).merge_and_unload()
    torch.manual_seed(1)
    merged_ref = get_peft_model(ref.hf, cfg).merge_and_unload()
    model.hf, ref.hf = merged, merged_ref
    torch.testing.assert_close(
        _logits(model, PROMPTS[2]), _logits(ref, PROMPTS[2]), atol=1e-5, rtol=1e-5
    )


def test_a_packed_model_can_be_deep_copied() -> None:
    import copy

    model = build("llama")
    model.use_linear_kernel("onednn")
    ref = _logits(model, PROMPTS[1])  # packed: the copies hold oneDNN tensors without storage
    twin = copy.deepcopy(model.hf)
    assert isinstance(twin.model.layers[0].mlp.up_proj, PackedLinear)
    with torch.no_grad():
        got = twin(
            **model.tokenizer([PROMPTS[1], PROMPTS[1] + " and"], return_tensors="pt", padding=True)
        ).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-5)


def test_gradients_and_training_use_f_linear() -> None:
    model = build("llama")
    model.use_linear_kernel("onednn")
    layer = model.hf.model.layers[0].mlp.up_proj
    ids = model.tokenizer(PROMPTS[:2], return_tensors="pt", padding=True)
    out = model.hf(**ids).logits  # grad enabled, weights require grad: no packing
    out.sum().backward()
    assert layer.weight.grad is not None and layer._packed is None
    model.hf.train()
    with torch.no_grad():
        model.hf(**ids)
    assert layer._packed is None  # training mode: F.linear
    model.hf.eval()
    with torch.no_grad():
        model.hf(**ids)
    assert layer._packed is not None


def test_greedy_generation_is_unchanged() -> None:
    plain, packed = build("llama"), build("llama")
    packed.use_linear_kernel("onednn")
    req = GenerationRequest(max_new_tokens=12)
    texts = [plain.prompt_text([{"role": "user", "content": p}]) for p in PROMPTS]
    for cache in (None, PrefixCache()):
        a = generate_batch(plain, texts, req, cache=cache)
        b = generate_batch(packed, texts, req, cache=PrefixCache() if cache else None)
        assert [r.completion_ids for r in a] == [r.completion_ids for r in b]


def test_kernel_choice_and_errors(tiny_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safelab.models.loading import load_model

    model = build("llama")
    with pytest.raises(SafelabError, match="unknown linear kernel 'mkl'"):
        model.use_linear_kernel("mkl")
    model.hf.to(torch.bfloat16)
    assert resolve_linear_kernel(model.hf, "auto") == "torch"
    with pytest.raises(SafelabError, match="not float32 on CPU; use linear=torch"):
        set_linear_kernel(model.hf, "onednn")
    assert linear_kernel(model.hf) == "torch"
    assert load_model(str(tiny_folder)).linear_kernel == "onednn"  # auto, float32 on CPU
    assert load_model(str(tiny_folder), linear="torch").linear_kernel == "torch"
    monkeypatch.setenv("SAFELAB_LINEAR_KERNEL", "torch")
    assert load_model(str(tiny_folder)).linear_kernel == "torch"
    assert load_model(str(tiny_folder), dtype="bfloat16").linear_kernel == "torch"


def test_release_caches_frees_other_models_packed_weights() -> None:
    from safelab.models.kernels import drop_packed
    from safelab.provider.batcher import release_caches, share_model

    a, b = build("llama"), build("llama")
    for i, m in enumerate((a, b)):
        m.use_linear_kernel("onednn")
        share_model(m, f"packed-release-{id(m)}-{i}")
        _logits(m, PROMPTS[0])
    layer = lambda m: m.hf.model.layers[0].mlp.up_proj  # noqa: E731
    assert layer(a)._packed is not None and layer(b)._packed is not None
    ref = _logits(a, PROMPTS[0])
    release_caches(keep=b)
    assert layer(a)._packed is None and layer(b)._packed is not None
    torch.testing.assert_close(_logits(a, PROMPTS[0]), ref, atol=0, rtol=0)  # packed again
    assert layer(a)._packed is not None
    assert drop_packed(b.hf) > 0 and drop_packed(b.hf) == 0


def test_cache_scope_separates_kernels() -> None:
    model = build("llama")
    a = model.cache_scope()
    model.use_linear_kernel("onednn")
    assert model.cache_scope() != a
