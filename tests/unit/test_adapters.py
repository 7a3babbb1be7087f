"""Every architecture adapter, on a tiny random model of its family built from a config."""

import pytest
import torch

from tests.tiny import FAMILIES, tiny_model

TEXTS = ["Paris is the capital of France.", "The quick brown fox jumps over the lazy dog today."]


@pytest.fixture(scope="module", params=FAMILIES)
def model(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return tiny_model(request.param)


def _hidden_states(model, text: str) -> tuple[torch.Tensor, ...]:  # type: ignore[no-untyped-def]
    ids = model.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        return model.hf(**ids, output_hidden_states=True).hidden_states


def test_capture_equals_output_hidden_states(model) -> None:  # type: ignore[no-untyped-def]
    acts = model.capture(TEXTS[:1], "blocks.*.resid_pre,blocks.*.resid_post", position="all")
    hs = _hidden_states(model, TEXTS[0])
    for layer in range(model.n_layers):
        torch.testing.assert_close(acts[f"blocks.{layer}.resid_pre"], hs[layer][0])
        if layer < model.n_layers - 1:  # the last hidden state is after the final norm
            torch.testing.assert_close(acts[f"blocks.{layer}.resid_post"], hs[layer + 1][0])
    final = model.capture(TEXTS[:1], "ln_final", position="all")["ln_final"]
    torch.testing.assert_close(final, hs[-1][0])


def test_sublayer_outputs_add_up_to_the_residual_stream(model) -> None:  # type: ignore[no-untyped-def]
    acts = model.capture(TEXTS, "blocks.*.*", position="all")
    for layer in range(model.n_layers):
        pre, mid, post = (
            acts[f"blocks.{layer}.{k}"] for k in ("resid_pre", "resid_mid", "resid_post")
        )
        torch.testing.assert_close(
            pre + acts[f"blocks.{layer}.attn_out"], mid, atol=1e-5, rtol=1e-5
        )
        torch.testing.assert_close(
            mid + acts[f"blocks.{layer}.mlp_out"], post, atol=1e-5, rtol=1e-5
        )


def test_steering_at_scale_zero_changes_nothing(model) -> None:  # type: ignore[no-untyped-def]
    prompt = [[{"role": "user", "content": "What is two plus two?"}]]
    plain = model.generate(prompt, max_new_tokens=6)
    vector = torch.randn(model.d_model)
    with model.steer(vector, "blocks.1.resid_post", scale=0.0):
        zero = model.generate(prompt, max_new_tokens=6)
    with model.steer(vector, "blocks.1.resid_post", scale=50.0):
        strong = model.capture(TEXTS[:1], "blocks.2.resid_pre", "last")["blocks.2.resid_pre"]
    base = model.capture(TEXTS[:1], "blocks.2.resid_pre", "last")["blocks.2.resid_pre"]
    assert zero == plain
    torch.testing.assert_close(strong - base, 50.0 * vector[None], atol=1e-3, rtol=1e-4)


def test_mlp_in_is_what_the_mlp_reads(model) -> None:  # type: ignore[no-untyped-def]
    acts = model.capture(TEXTS[:1], "blocks.1.resid_mid,blocks.1.mlp_in,blocks.1.mlp_out", "all")
    block = model.adapter.blocks()[1]
    norm = getattr(block, "post_attention_layernorm", None) or getattr(block, "ln_2", None)
    if hasattr(block, "pre_feedforward_layernorm"):
        norm = block.pre_feedforward_layernorm
    with torch.no_grad():
        normed = norm(acts["blocks.1.resid_mid"][None])[0]
        out = block.mlp(acts["blocks.1.mlp_in"][None])[0]
    torch.testing.assert_close(acts["blocks.1.mlp_in"], normed, atol=1e-5, rtol=1e-5)
    if not hasattr(block, "post_feedforward_layernorm"):  # Gemma's mlp_out is after a norm
        torch.testing.assert_close(out, acts["blocks.1.mlp_out"], atol=1e-5, rtol=1e-5)
