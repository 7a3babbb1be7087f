"""SAEs written by SAELens and sparsify themselves, read by safelab: latent by latent.

The fixtures in ``tests/fixtures/sae_libs`` were made by those libraries' own code
(``make.py`` there, in its own venv); neither library is needed here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from safelab.sae.formats import load_sae, saelens_cfg, tl_hook_name
from safelab.sae.sae import SAEConfig

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "sae_libs"

CASES = {
    # fixture: (folder to load, site safelab must read, architecture safelab runs)
    "saelens_topk_rescaled": ("saelens_topk_rescaled", "blocks.1.resid_post", "topk"),
    "saelens_batchtopk": ("saelens_batchtopk", "blocks.0.mlp_out", "jumprelu"),
    "saelens_jumprelu": ("saelens_jumprelu", "blocks.2.resid_pre", "jumprelu"),
    "sparsify_topk": ("sparsify_topk", "blocks.1.resid_post", "topk"),
    "gemmascope2": ("gemmascope2", "blocks.3.resid_post", "jumprelu"),
}


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("name", sorted(CASES))
def test_latents_equal_the_librarys(name: str) -> None:
    folder, site, arch = CASES[name]
    x = load_file(str(FIXTURES / name / "x.safetensors"))["x"]
    expected = load_file(str(FIXTURES / name / "expected.safetensors"))
    # Loading the fixture's top folder also covers a folder around exactly one SAE.
    sae = load_sae(FIXTURES / folder)
    assert sae.site == site and sae.cfg.architecture == arch
    with torch.no_grad():
        z = sae.encode(x)
        recon = sae.decode(z)
    lib_z = expected["latents"]
    # Same active set for every token, same values, same reconstruction.
    assert torch.equal(z != 0, lib_z != 0), f"{name}: active latents differ"
    assert _relative_error(z, lib_z) < 1e-5
    assert _relative_error(recon, expected["recon"]) < 1e-5


def test_batchtopk_is_not_per_token_topk() -> None:
    """SAELens's own latents of the checkpoint vary in count per token (a threshold, not k)."""
    lib_z = load_file(str(FIXTURES / "saelens_batchtopk" / "expected.safetensors"))["latents"]
    counts = (lib_z != 0).sum(-1)
    assert counts.unique().numel() > 1


def test_safelab_saves_read_by_saelens_and_sparsify() -> None:
    """make.py loaded safelab's saves in SAELens (HookedSAETransformer attached the SAE) and
    sparsify; safelab still writes the keys that made that work."""
    seen = json.loads((FIXTURES / "safelab_in_libs.json").read_text())
    assert seen["hooked_sae_transformer_attached"] == ["blocks.1.hook_resid_post"]
    assert seen["saelens_hook_name"] == "blocks.1.hook_resid_post"
    assert seen["saelens_model_name"] == "random"  # metadata kept: read as a 6.x config
    assert seen["saelens_max_latent_diff"] < 1e-5 and seen["sparsify_max_latent_diff"] < 1e-5
    cfg = saelens_cfg(SAEConfig(d_in=16, d_sae=64, site="blocks.1.resid_post", model="random"))
    assert cfg["metadata"]["hook_name"] == "blocks.1.hook_resid_post"
    assert cfg["metadata"]["sae_lens_version"].startswith("6.")
    assert cfg["safelab"]["site"] == "blocks.1.resid_post"


@pytest.mark.parametrize(
    ("site", "hook"),
    [
        ("blocks.3.resid_post", "blocks.3.hook_resid_post"),
        ("blocks.0.resid_pre", "blocks.0.hook_resid_pre"),
        ("blocks.2.mlp_out", "blocks.2.hook_mlp_out"),
        ("blocks.2.attn_out", "blocks.2.hook_attn_out"),
        ("ln_final", "ln_final.hook_normalized"),
    ],
)
def test_tl_hook_names_round_trip(site: str, hook: str, tmp_path: Path) -> None:
    from safelab.sae.formats import save_saelens
    from safelab.sae.sae import SparseAutoencoder

    assert tl_hook_name(site) == hook
    sae = SparseAutoencoder.random(8, 16, site)
    save_saelens(sae, tmp_path / "s")
    raw = json.loads((tmp_path / "s" / "cfg.json").read_text())
    raw.pop("safelab")  # as a file SAELens itself wrote: the site comes from hook_name
    (tmp_path / "s" / "cfg.json").write_text(json.dumps(raw))
    assert load_sae(tmp_path / "s").site == site


def test_batchtopk_without_threshold_is_one_line(tmp_path: Path) -> None:
    import shutil

    from safetensors.torch import save_file

    from safelab.errors import SafelabError

    src = FIXTURES / "saelens_batchtopk"
    shutil.copy(src / "cfg.json", tmp_path / "cfg.json")
    t = load_file(str(src / "sae_weights.safetensors"))
    t.pop("topk_threshold")
    save_file(t, str(tmp_path / "sae_weights.safetensors"))
    with pytest.raises(SafelabError, match="save_inference_model"):
        load_sae(tmp_path)
