"""Transcoder training on a tiny random Llama: it learns, it resumes exactly, it saves circuit-tracer's layout."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from safelab.interp.store import ActivationStore, capture_to_store
from safelab.transcoders.metrics import evaluate_set
from safelab.transcoders.train import TranscoderTrainConfig, train_transcoders
from safelab.transcoders.transcoder import load_transcoders
from tests.tiny import tiny_model

TEXTS = [
    f"The quick brown fox jumps over the lazy dog {i} times. Paris is in France." for i in range(40)
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    model = tiny_model("llama")
    path = tmp_path_factory.mktemp("store")
    capture_to_store(
        model,
        TEXTS,
        "blocks.*.mlp_in,blocks.*.mlp_out",
        path,
        position="all",
        progress=False,
        shard_rows=300,
    )
    return model, path


def _cfg(store_path: Path, out: Path, **kw) -> TranscoderTrainConfig:  # type: ignore[no-untyped-def]
    base = dict(
        expansion=2,
        k=4,
        tokens=1536,
        batch_size=128,
        checkpoint_every=3,
        geomedian_rows=256,
        threshold_batches=2,
    )
    base.update(kw)
    return TranscoderTrainConfig(store=str(store_path), out=str(out), **base)  # type: ignore[arg-type]


def test_trains_every_layer_in_circuit_tracers_layout_and_explains_the_mlp(
    store, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    model, path = store
    out = train_transcoders(_cfg(path, tmp_path / "tc", skip=True), progress=False)
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["model_kind"] == "transcoder_set"
    assert (
        cfg["feature_input_hook"] == "mlp.hook_in" and cfg["feature_output_hook"] == "mlp.hook_out"
    )
    assert cfg["transcoders"] == [f"layer_{i}.safetensors" for i in range(model.n_layers)]
    t = load_file(str(out / "layer_0.safetensors"))
    d, d_sae = model.d_model, 2 * model.d_model
    assert t["W_enc"].shape == (d_sae, d) and t["W_dec"].shape == (d_sae, d)  # F.linear layout
    assert t["activation_function.threshold"].shape == (d_sae,) and t["W_skip"].shape == (d, d)
    ts = load_transcoders(out)
    ts.check_fits(model)
    m = evaluate_set(ts, ActivationStore(path), model, ce_tokens=400, resamples=50)
    assert all(layer["explained_variance"] > 0.3 for layer in m["layers"])
    assert m["kl_replacement"] >= 0.0 and m["ce_tokens"] > 0


def test_an_interrupted_run_resumes_to_the_same_weights(store, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    _, path = store
    whole = train_transcoders(_cfg(path, tmp_path / "whole", layers=(0, 1)), progress=False)

    class Stop(Exception):
        pass

    def stop(layer: int, step: int) -> None:
        if layer == 1 and step == 7:
            raise Stop

    with pytest.raises(Stop):
        train_transcoders(_cfg(path, tmp_path / "cut", layers=(0, 1)), progress=False, on_step=stop)
    assert (tmp_path / "cut" / "layer_0.safetensors").is_file()
    assert not (tmp_path / "cut" / "layer_1.safetensors").is_file()
    resumed = train_transcoders(_cfg(path, tmp_path / "cut", layers=(0, 1)), progress=False)
    for layer in (0, 1):
        a = load_file(str(whole / f"layer_{layer}.safetensors"))
        b = load_file(str(resumed / f"layer_{layer}.safetensors"))
        for key in a:
            torch.testing.assert_close(a[key], b[key])
