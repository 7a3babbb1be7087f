"""A tiny SAE on a few hundred real tokens of the default model: the pipeline end to end."""

import math

import pytest

from safelab.interp.store import capture_to_store
from safelab.models.loading import load_model
from safelab.sae.formats import load_sae
from safelab.sae.metrics import evaluate
from safelab.sae.texts import build_passages, read_sentences
from safelab.sae.train import SAETrainConfig, train_sae

pytestmark = pytest.mark.integration
SITE = "blocks.15.resid_post"


def test_train_and_evaluate_on_default_model(tmp_path, shared_data) -> None:  # type: ignore[no-untyped-def]
    model = load_model("default", dtype="float32")
    texts = build_passages(read_sentences(shared_data), model.tokenizer, 400, per_text=40)
    capture_to_store(model, texts, SITE, tmp_path / "store", "all", progress=False)
    cfg = SAETrainConfig(
        store=str(tmp_path / "store"),
        out=str(tmp_path / "sae"),
        site=SITE,
        expansion=2,
        k=16,
        tokens=256 * 8,
        batch_size=256,
        holdout_every=4,
        geomedian_rows=256,
        threshold_batches=2,
    )
    train_sae(cfg, progress=False)
    sae = load_sae(tmp_path / "sae")
    assert sae.cfg.d_in == model.d_model == 576 and sae.site == SITE
    m = evaluate(sae, sae_store(tmp_path), model, ce_tokens=200, resamples=100)
    for key in ("explained_variance", "l0", "dead_fraction", "ce_clean", "ce_sae", "ce_zero"):
        assert math.isfinite(m[key]), key
    assert 0 <= m["dead_fraction"] <= 1 and 0 < m["l0"] < sae.d_sae
    assert m["explained_variance"] <= 1 and m["ce_zero"] > m["ce_clean"] > 0
    # A few steps on a few hundred tokens already beat ablating the site.
    assert m["ce_sae"] < m["ce_zero"]


def sae_store(tmp_path):  # type: ignore[no-untyped-def]
    from safelab.interp.store import ActivationStore

    return ActivationStore(tmp_path / "store")
