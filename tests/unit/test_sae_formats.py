"""SparseAutoencoder and the SAELens / sparsify / Gemma Scope formats on tiny random SAEs."""

import json

import pytest
import torch

from safelab.errors import SafelabError
from safelab.sae.formats import load_sae, save_gemmascope, save_sae, save_sparsify
from safelab.sae.sae import SAEConfig, SparseAutoencoder

D_IN, D_SAE = 6, 20  # d_in != d_sae, so a transposed W_dec cannot load silently


def _distinct_sae(arch: str = "jumprelu", k: int | None = None) -> SparseAutoencoder:
    g = torch.Generator().manual_seed(1)
    cfg = SAEConfig(d_in=D_IN, d_sae=D_SAE, site="blocks.1.resid_post", architecture=arch, k=k)
    return SparseAutoencoder.from_tensors(
        cfg,
        {
            "W_enc": torch.randn(D_IN, D_SAE, generator=g),
            "b_enc": torch.randn(D_SAE, generator=g),
            "W_dec": torch.randn(D_SAE, D_IN, generator=g),
            "b_dec": torch.randn(D_IN, generator=g),
            "threshold": torch.rand(D_SAE, generator=g),
        },
    )


def _one_hot_decode(sae: SparseAutoencoder, i: int) -> torch.Tensor:
    z = torch.zeros(D_SAE)
    z[i] = 1.0
    return sae.decode(z) - sae.b_dec


def _assert_same(a: SparseAutoencoder, b: SparseAutoencoder) -> None:
    x = torch.randn(11, D_IN, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(a.encode(x), b.encode(x), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a(x), b(x), atol=1e-5, rtol=1e-5)
    for i in (0, 7, D_SAE - 1):
        torch.testing.assert_close(_one_hot_decode(b, i), a.W_dec[i].detach())


def test_shapes_and_jumprelu_threshold() -> None:
    sae = _distinct_sae()
    x = torch.randn(3, 4, D_IN)
    z = sae.encode(x)
    assert z.shape == (3, 4, D_SAE) and sae(x).shape == x.shape
    pre = sae.pre_acts(x)
    # Below the threshold a latent is off even when its pre-activation is positive.
    assert torch.all(z[(pre > 0) & (pre <= sae.threshold)] == 0)
    assert torch.all(z[pre > sae.threshold] == pre[pre > sae.threshold])
    # The code of a token never depends on the rest of the batch.
    torch.testing.assert_close(sae.encode(x[0, :1]), z[0, :1])


def test_topk_keeps_k_per_token() -> None:
    sae = _distinct_sae("topk", k=3)
    z = sae.encode(torch.randn(9, D_IN))
    assert ((z > 0).sum(-1) <= 3).all() and ((z > 0).sum(-1) == 3).any()


def test_random_sae_is_deterministic_and_unit_norm() -> None:
    a = SparseAutoencoder.random(D_IN, D_SAE, "blocks.0.resid_post", seed=3)
    b = SparseAutoencoder.random(D_IN, D_SAE, "blocks.0.resid_post", seed=3)
    torch.testing.assert_close(a.W_dec, b.W_dec)
    torch.testing.assert_close(a.W_dec.norm(dim=1), torch.ones(D_SAE))


def test_saelens_round_trip_keeps_orientation_and_cfg(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sae = _distinct_sae()
    sae.cfg = sae.cfg.replace(metrics={"explained_variance": 0.9}, train={"seed": 5})
    save_sae(sae, tmp_path / "s")
    raw = json.loads((tmp_path / "s" / "cfg.json").read_text())
    assert raw["metadata"]["hook_name"] == "blocks.1.hook_resid_post" and raw["d_sae"] == D_SAE
    assert raw["safelab"]["site"] == "blocks.1.resid_post"
    from safetensors.torch import load_file

    w = load_file(str(tmp_path / "s" / "sae_weights.safetensors"))
    assert tuple(w["W_enc"].shape) == (D_IN, D_SAE) and tuple(w["W_dec"].shape) == (D_SAE, D_IN)
    back = load_sae(tmp_path / "s")
    assert back.cfg.metrics == {"explained_variance": 0.9} and back.cfg.train == {"seed": 5}
    assert back.site == "blocks.1.resid_post" and back.cfg.architecture == "jumprelu"
    _assert_same(sae, back)
    _assert_same(sae, load_sae(tmp_path / "s" / "sae_weights.safetensors"))


def test_saelens_foreign_cfg_hook_name_and_b_dec_to_input(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sae = _distinct_sae("relu")
    save_sae(sae, tmp_path / "s")
    raw = json.loads((tmp_path / "s" / "cfg.json").read_text())
    del raw["safelab"]
    raw.update(architecture="standard", apply_b_dec_to_input=True)
    raw["metadata"]["hook_name"] = "blocks.2.hook_resid_pre"
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(raw))
    back = load_sae(tmp_path / "s")
    assert back.site == "blocks.2.resid_pre" and back.cfg.architecture == "relu"
    x = torch.randn(5, D_IN)
    # SAELens subtracts b_dec before encoding when apply_b_dec_to_input is set.
    expected = torch.relu((x - sae.b_dec) @ sae.W_enc + sae.b_enc)
    torch.testing.assert_close(back.encode(x), expected.detach(), atol=1e-5, rtol=1e-5)


def test_sparsify_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sae = _distinct_sae("topk", k=4)
    save_sparsify(sae, tmp_path / "layers.1")
    from safetensors.torch import load_file

    w = load_file(str(tmp_path / "layers.1" / "sae.safetensors"))
    assert tuple(w["encoder.weight"].shape) == (D_SAE, D_IN)
    back = load_sae(tmp_path / "layers.1")
    assert back.cfg.source_format == "sparsify" and back.cfg.k == 4
    assert back.site == "blocks.1.resid_post"
    _assert_same(sae, back)
    # sparsify's own equation: topk(relu(encoder(x - b_dec))) @ W_dec + b_dec
    x = torch.randn(7, D_IN)
    pre = (x - w["b_dec"]) @ w["encoder.weight"].T + w["encoder.bias"]
    top = torch.relu(pre).topk(4)
    want = (top.values.unsqueeze(-1) * w["W_dec"][top.indices]).sum(1) + w["b_dec"]
    torch.testing.assert_close(back(x), want, atol=1e-4, rtol=1e-4)


def test_gemmascope_round_trip(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sae = _distinct_sae()
    npz = save_gemmascope(sae, tmp_path / "layer_1" / "width_16k" / "params.npz")
    back = load_sae(npz.parent)
    assert back.site == "blocks.1.resid_post" and back.cfg.source_format == "gemmascope"
    _assert_same(sae, back)
    torch.testing.assert_close(back.threshold, sae.threshold)


def test_transposed_decoder_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sae = _distinct_sae()
    save_sae(sae, tmp_path / "s")
    from safetensors.torch import load_file, save_file

    w = load_file(str(tmp_path / "s" / "sae_weights.safetensors"))
    w["W_dec"] = w["W_dec"].T.contiguous()
    save_file(w, str(tmp_path / "s" / "sae_weights.safetensors"))
    with pytest.raises(SafelabError, match="shape"):
        load_sae(tmp_path / "s")


def test_unknown_format_names_folder_and_formats(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "weights.bin").write_bytes(b"x")
    with pytest.raises(SafelabError, match=r"junk holds no SAE format .*SAELens.*sparsify.*Gemma"):
        load_sae(tmp_path / "junk")
    with pytest.raises(SafelabError, match="no SAE at"):
        load_sae(tmp_path / "missing")
