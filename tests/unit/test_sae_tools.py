"""Metrics, feature pages, feature steering, per-token records and the `safelab sae` CLI on tiny models."""

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from safelab.cli import main
from safelab.errors import SafelabError
from safelab.interp.steering import feature_vector
from safelab.interp.store import capture_to_store
from safelab.sae.features import feature_page
from safelab.sae.formats import save_sae
from safelab.sae.metrics import evaluate
from safelab.sae.record import top_features
from safelab.sae.sae import SAEConfig, SparseAutoencoder
from safelab.sae.steer import parse_feature_ref
from tests.browser import dump_dom

SITE = "blocks.1.resid_post"
TEXTS = [f"Text {i}: the quick brown fox asks what two plus two is, safely." for i in range(12)]


def _exact_sae(d: int, scale: float = 1.0) -> SparseAutoencoder:
    """relu(x) - relu(-x) = x: a 2d-latent SAE that reconstructs exactly (scale=0: outputs 0)."""
    eye = torch.eye(d)
    cfg = SAEConfig(
        d_in=d,
        d_sae=2 * d,
        site=SITE,
        architecture="relu",
        model="tiny",
        train={"holdout_every": 3, "skip_first": True},
    )
    return SparseAutoencoder.from_tensors(
        cfg,
        {
            "W_enc": torch.cat([eye, -eye], 1),
            "b_enc": torch.zeros(2 * d),
            "W_dec": scale * torch.cat([eye, -eye], 0),
            "b_dec": torch.zeros(d),
        },
    )


@pytest.fixture
def store(tiny_model, tmp_path):  # type: ignore[no-untyped-def]
    return capture_to_store(tiny_model, TEXTS, SITE, tmp_path / "store", "all", progress=False)


def test_exact_sae_recovers_everything_and_zero_sae_nothing(tiny_model, store) -> None:  # type: ignore[no-untyped-def]
    m = evaluate(_exact_sae(tiny_model.d_model), store, tiny_model, resamples=50)
    assert m["explained_variance"] == pytest.approx(1.0, abs=1e-5)
    assert m["ce_sae"] == pytest.approx(m["ce_clean"], abs=1e-4)
    assert m["ce_recovered"] == pytest.approx(1.0, abs=1e-3)
    assert m["ce_tokens"] > 0 and m["heldout_tokens"] > 0
    assert m["dead_fraction"] < 0.5 and 0 < m["l0"] <= tiny_model.d_model
    z = evaluate(_exact_sae(tiny_model.d_model, scale=0.0), store, tiny_model, resamples=50)
    assert z["ce_sae"] == pytest.approx(z["ce_zero"], abs=1e-4)
    assert z["ce_recovered"] == pytest.approx(0.0, abs=1e-3)
    assert z["explained_variance"] < 0.1
    lo, hi = m["ce_recovered_ci"]
    assert lo <= m["ce_recovered"] <= hi


def test_store_of_other_width_is_refused(store) -> None:  # type: ignore[no-untyped-def]
    sae = SparseAutoencoder.random(8, 16, SITE)
    with pytest.raises(SafelabError, match="d_model 32 but the SAE reads 8"):
        evaluate(sae, store)


def test_feature_vector_is_the_unit_decoder_row(tmp_path) -> None:  # type: ignore[no-untyped-def]
    sae = SparseAutoencoder.random(6, 20, SITE, seed=4)
    with torch.no_grad():
        sae.W_dec[7] *= 3.0
    save_sae(sae, tmp_path / "s")
    ref = parse_feature_ref(f"{tmp_path / 's'}#7")
    assert ref == (str(tmp_path / "s"), 7)
    vec = feature_vector(*ref)
    assert vec.site == SITE and vec.cfg.method == "sae_feature"
    torch.testing.assert_close(vec.vector, sae.W_dec[7].detach() / sae.W_dec[7].norm().detach())
    assert parse_feature_ref(str(tmp_path)) is None
    with pytest.raises(SafelabError, match="feature 20 is out of range .*0..19"):
        feature_vector(tmp_path / "s", 20)
    with pytest.raises(SafelabError, match="FOLDER#INDEX"):
        parse_feature_ref("runs/x#abc")


def test_top_features_per_token() -> None:
    sae = SparseAutoencoder.random(6, 20, SITE, seed=1)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    recs = top_features(sae, x, k=3, tokens=["a", "b", "c", "d"])
    z = sae.encode(x)
    assert json.loads(json.dumps(recs)) == recs
    for p, rec in enumerate(recs):
        assert rec["token"] == "abcd"[p] and len(rec["features"]) <= 3
        best = int(z[p].argmax())
        assert rec["features"][0][0] == best
        acts = [a for _, a in rec["features"]]
        assert acts == sorted(acts, reverse=True)
    with pytest.raises(SafelabError, match="do not fit the SAE"):
        top_features(sae, torch.randn(4, 5))


def test_feature_page_renders_in_headless_chromium(tiny_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    sae = SparseAutoencoder.random(tiny_model.d_model, 64, SITE, seed=2)
    with pytest.raises(SafelabError, match="feature 64 is out of range"):
        feature_page(sae, tiny_model, TEXTS, tmp_path / "p.html", features=[1, 64])
    page = feature_page(sae, tiny_model, TEXTS, tmp_path / "p.html", features=[3, 5, 9])
    text = page.read_text()
    assert "<script" not in text and "http" not in text.replace("http://www.w3.org/2000/svg", "")
    dom = dump_dom(page, tmp_path / "profile")
    assert re.findall(r"<section id=\"f(\d+)\"", dom) == ["3", "5", "9"]
    assert len(re.findall(r"<svg", dom)) == 3 and len(re.findall(r"<rect", dom)) >= 3
    assert len(re.findall(r'class="max"', dom)) >= 3  # the top context's token is outlined
    assert dom.count("promoted") == 3


def test_cli_train_eval_features_and_bad_inputs(tiny_folder, tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    data = tmp_path / "texts.txt"
    data.write_text("\n".join(TEXTS * 3) + "\n")
    out = tmp_path / "sae"
    argv = [
        "sae",
        "train",
        "--model",
        str(tiny_folder),
        "--data",
        str(data),
        "--site",
        SITE,
        "--tokens",
        "2k",
        "--expansion",
        "2",
        "--k",
        "4",
        "--batch-size",
        "64",
        "--out",
        str(out),
    ]
    assert main(argv) == 0
    cfg = json.loads((out / "cfg.json").read_text())
    metrics = cfg["safelab"]["metrics"]
    assert cfg["safelab"]["site"] == SITE and cfg["d_sae"] == 64
    for key in ("explained_variance", "l0", "dead_fraction", "ce_recovered"):
        assert metrics[key] == metrics[key]  # finite, not NaN
    assert 0 <= metrics["dead_fraction"] <= 1 and metrics["l0"] > 0
    assert main(["sae", "eval", str(out), "--model", str(tiny_folder), "--ce-tokens", "0"]) == 0
    page = tmp_path / "f.html"
    assert (
        main(
            [
                "sae",
                "features",
                str(out),
                "--model",
                str(tiny_folder),
                "--data",
                str(data),
                "--features",
                "0,1",
                "--out",
                str(page),
            ]
        )
        == 0
    )
    assert page.is_file()
    # A folder around exactly one SAE loads it; around two it asks which.
    assert main(["sae", "eval", str(tmp_path)]) == 0
    shutil.copytree(out, tmp_path / "sae2")
    capsys.readouterr()
    # Bad input: one line, exit 2.
    for bad, fragment in (
        (["sae", "eval", str(tmp_path)], "holds 2 SAEs (sae, sae2)"),
        (["sae", "eval", str(data)], "is not an SAE weights file"),
        (
            [
                "sae",
                "features",
                str(out),
                "--model",
                str(tiny_folder),
                "--data",
                str(data),
                "--features",
                "999",
            ],
            "feature 999 is out of range",
        ),
        (
            [
                *argv[:-1],
                str(tmp_path / "other"),
                "--store",
                str(out / "store"),
                "--site",
                "blocks.0.resid_post",
            ],
            "has no site blocks.0.resid_post",
        ),
    ):
        assert main(bad) == 2
        err = capsys.readouterr().err.strip()
        assert fragment in err and len(err.splitlines()) == 1, err
