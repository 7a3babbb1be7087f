"""BatchTopK training on tiny stores: it learns, it resumes exactly, it exports JumpReLU."""

import math

import pytest
import torch

from safelab.errors import SafelabError
from safelab.interp.store import ActivationStore, StoreManifest
from safelab.models.capture import Activations
from safelab.sae.formats import load_sae
from safelab.sae.train import SAETrainConfig, geometric_median, train_sae

SITE = "blocks.1.resid_post"


def synthetic_store(path, n_inputs=60, tokens=40, d=16, n_feat=48, active=3, seed=0):  # type: ignore[no-untyped-def]
    """Rows that are sparse sums of ``active`` of ``n_feat`` unit directions plus an offset."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n_feat, d, generator=g)
    dirs /= dirs.norm(dim=1, keepdim=True)
    offset = 3 * torch.randn(d, generator=g)
    rows = n_inputs * tokens
    idx = torch.stack([torch.randperm(n_feat, generator=g)[:active] for _ in range(rows)])
    coef = 1 + 2 * torch.rand(rows, active, generator=g)
    x = (coef[..., None] * dirs[idx]).sum(1) + offset
    sample = torch.arange(n_inputs).repeat_interleave(tokens)
    position = torch.arange(tokens).repeat(n_inputs)
    manifest = StoreManifest(
        model="synthetic",
        sites=[SITE],
        position="all",
        d_model=d,
        dtype="float32",
        n_inputs=n_inputs,
        fingerprint="x",
    )
    store = ActivationStore.create(path, manifest)
    for lo in range(0, n_inputs, 15):
        m = (sample >= lo) & (sample < lo + 15)
        store.append(
            Activations(
                {SITE: x[m]}, sample[m], position[m], torch.zeros(int(m.sum()), dtype=torch.long)
            ),
            inputs_done=lo + 15,
            shard_rows=500,
        )
    store.flush()
    return store


def _cfg(tmp_path, out="sae", **kw):  # type: ignore[no-untyped-def]
    base = dict(
        store=str(tmp_path / "store"),
        out=str(tmp_path / out),
        site=SITE,
        expansion=3,
        k=3,
        tokens=256 * 60,
        batch_size=256,
        base_lr=3e-3,
        aux_k=8,
        dead_tokens=2048,
        checkpoint_every=10,
        geomedian_rows=512,
        threshold_batches=4,
        max_norm_ratio=0,
    )
    base.update(kw)
    return SAETrainConfig(**base)  # type: ignore[arg-type]


def test_geometric_median_resists_outliers() -> None:
    x = torch.cat([torch.zeros(20, 2) + torch.tensor([1.0, 2.0]), torch.tensor([[1e4, 1e4]])])
    x[:20] += 0.01 * torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    gm = geometric_median(x)
    assert (gm - torch.tensor([1.0, 2.0])).norm() < 0.05
    assert (x.mean(0) - torch.tensor([1.0, 2.0])).norm() > 100


def test_lr_scales_with_inverse_sqrt_latents() -> None:
    cfg = SAETrainConfig(store="s", out="o", base_lr=2e-4)
    assert math.isclose(cfg.lr(2**14), 2e-4) and math.isclose(cfg.lr(2**16), 1e-4)


def test_learns_sparse_dictionary_and_exports_jumprelu(tmp_path) -> None:  # type: ignore[no-untyped-def]
    synthetic_store(tmp_path / "store")
    sae = train_sae(_cfg(tmp_path), progress=False)
    hist = __import__("json").loads((tmp_path / "sae" / "history.json").read_text())
    assert hist[-1]["fvu"] < 0.5 * hist[0]["fvu"]
    torch.testing.assert_close(sae.W_dec.norm(dim=1), torch.ones(sae.d_sae), atol=1e-4, rtol=0)
    loaded = load_sae(tmp_path / "sae")
    assert loaded.cfg.architecture == "jumprelu" and loaded.cfg.train["seed"] == 0
    assert (loaded.threshold > 0).all()
    x = ActivationStore(tmp_path / "store")[SITE]
    z = loaded.encode(x)
    ev = 1 - (loaded(x) - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum()
    assert ev > 0.7  # an untrained SAE (W_enc = W_dec^T, random) is far below
    l0 = float((z > 0).sum(-1).float().mean())
    assert 1 <= l0 <= 2 * 3  # the JumpReLU threshold keeps about k latents per token
    # inference does not depend on the batch
    torch.testing.assert_close(loaded.encode(x[:1]), z[:1])


def test_resume_after_interruption_equals_uninterrupted(tmp_path) -> None:  # type: ignore[no-untyped-def]
    synthetic_store(tmp_path / "store")
    whole = train_sae(_cfg(tmp_path, "whole", tokens=256 * 25), progress=False)

    def crash(step: int) -> None:
        if step == 17:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_sae(_cfg(tmp_path, "resumed", tokens=256 * 25), progress=False, on_step=crash)
    assert not (tmp_path / "resumed" / "sae_weights.safetensors").exists()
    resumed = train_sae(_cfg(tmp_path, "resumed", tokens=256 * 25), progress=False)
    for name in ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"):
        torch.testing.assert_close(
            getattr(resumed, name), getattr(whole, name), atol=1e-6, rtol=1e-6
        )
    with pytest.raises(SafelabError, match="checkpoint trained with k=3"):
        train_sae(_cfg(tmp_path, "resumed", k=4), progress=False)


def test_store_without_site_is_one_line_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    synthetic_store(tmp_path / "store")
    with pytest.raises(SafelabError, match="has no site blocks.0.mlp_out"):
        train_sae(_cfg(tmp_path, site="blocks.0.mlp_out"), progress=False)
