"""The k-sparse SAE probe: planted latents are selected and separate held-out data; labels with
no signal give an interval around chance; bad shapes name the fix."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from safelab.errors import SafelabError
from safelab.sae.probe import fit_sparse_probe, select_latents, sparse_probe
from safelab.sae.sae import SparseAutoencoder


def planted(n: int, d: int, signal: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sparse non-negative latents; the ``signal`` latents fire more in the positive class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    z = rng.exponential(1.0, size=(n, d)) * (rng.random((n, d)) < 0.1)
    for j in signal:
        z[:, j] += y * rng.exponential(2.0, size=n)
    return z, y


def test_selects_the_planted_latents_and_separates_held_out_rows() -> None:
    z, y = planted(400, 200, (3, 77), seed=0)
    result = fit_sparse_probe(z[:300], y[:300], z[300:], y[300:], k=2, n_resamples=200)
    assert set(result.latents) == {3, 77}
    assert all(v > 0 for v in result.mean_diff) and all(w > 0 for w in result.weights)
    assert result.auroc > 0.9 and result.auroc_ci[0] > 0.8
    assert (result.n_train, result.n_test, result.k) == (300, 100, 2)


def test_no_signal_gives_chance() -> None:
    z, _ = planted(400, 50, (), seed=1)
    y = np.random.default_rng(2).integers(0, 2, size=400)
    result = fit_sparse_probe(z[:300], y[:300], z[300:], y[300:], k=4, n_resamples=200)
    assert result.auroc_ci[0] < 0.5 < result.auroc_ci[1]


def test_selection_is_by_absolute_mean_difference() -> None:
    z = np.zeros((4, 3))
    z[:, 0] = [0, 0, 1, 1]  # +1 in the positive class
    z[:, 1] = [5, 5, 0, 0]  # -5: larger in absolute value
    chosen, diff = select_latents(z, np.array([0, 0, 1, 1]), 2)
    assert chosen.tolist() == [1, 0] and diff.tolist() == [-5.0, 1.0]


def test_sparse_probe_encodes_with_the_sae() -> None:
    sae = SparseAutoencoder.random(16, 64, "blocks.0.resid_post", seed=0)
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (200,), generator=g)
    # Activations along latent 5's encoder direction in the positive class only.
    x = 0.3 * torch.randn(200, 16, generator=g) + 3.0 * y[:, None] * sae.W_enc[:, 5]
    result = sparse_probe(sae, x[:150], y[:150], x[150:], y[150:], k=1, n_resamples=100)
    assert result.latents == [5] and result.auroc > 0.95


def test_bad_input_names_the_fix() -> None:
    z, y = planted(40, 10, (1,), seed=0)
    with pytest.raises(SafelabError, match="k=11"):
        fit_sparse_probe(z, y, z, y, k=11)
    with pytest.raises(SafelabError, match="both classes"):
        fit_sparse_probe(z, np.zeros(40), z, y, k=2)
    with pytest.raises(SafelabError, match="same d_sae"):
        fit_sparse_probe(z, y, z[:, :5], y, k=2)
    sae = SparseAutoencoder.random(16, 32, "blocks.0.resid_post")
    with pytest.raises(SafelabError, match="d_in=16"):
        sparse_probe(sae, torch.zeros(4, 8), [0, 1, 0, 1], torch.zeros(4, 8), [0, 1, 0, 1])


def test_probe_sweep_adds_the_sparse_sae_column(tiny_folder, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from safelab import cli
    from safelab.sae.formats import save_sae
    from safelab.sae.sae import SparseAutoencoder

    rows = [f"The city number {i} is in country {i % 7}.,{i % 2}" for i in range(40)]
    data = tmp_path / "statements.csv"
    data.write_text("statement,label\n" + "\n".join(rows) + "\n")
    save_sae(SparseAutoencoder.random(32, 64, "blocks.1.resid_post", seed=0), tmp_path / "sae")
    out = tmp_path / "sweep"
    argv = ["probe", "sweep", "--data", str(data), "--out", str(out), "--model", str(tiny_folder)]
    argv += ["--cache", str(tmp_path / "cache"), "--resamples", "50", "--no-controls"]
    argv += ["--sites", "blocks.0.resid_post", "--sae", str(tmp_path / "sae"), "--sae-k", "4"]
    assert cli.main(argv) == 0
    sp = json.loads((out / "metrics.json").read_text())["sae_probe"]
    assert sp["site"] == "blocks.1.resid_post" and sp["k"] == 4 and len(sp["latents"]) == 4
    assert 0.0 <= sp["auroc"] <= 1.0 and sp["auroc_ci"][0] <= sp["auroc"] <= sp["auroc_ci"][1]
    assert sp["n_train"] + sp["n_test"] == 40
