"""The foundation on the real embedded default model (SmolLM2-135M-Instruct) and real data."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from safelab.interp.probes import LinearProbe
from safelab.models.loading import default_gguf_path, load_model

pytestmark = pytest.mark.integration
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def model():  # type: ignore[no-untyped-def]
    return load_model("default")


def test_default_model_answers_a_chat(model) -> None:  # type: ignore[no-untyped-def]
    assert model.n_layers == 30 and model.d_model == 576
    (answer,) = model.generate(
        [[{"role": "user", "content": "What is the capital of France?"}]], max_new_tokens=20
    )
    assert "Paris" in answer
    # transformers 4.x mis-tokenised this GGUF (wrong end token); generation must stop at <|im_end|>.
    assert model.tokenizer.eos_token == "<|im_end|>"


def test_gguf_path_loads_the_same_weights(model) -> None:  # type: ignore[no-untyped-def]
    again = load_model(str(default_gguf_path()))
    for a, b in zip(model.hf.parameters(), again.hf.parameters(), strict=True):
        assert torch.equal(a, b)


def test_capture_matches_hidden_states_on_the_real_model(model) -> None:  # type: ignore[no-untyped-def]
    text = "The Eiffel Tower is in Paris."
    acts = model.capture(
        [text], "blocks.0.resid_pre,blocks.14.resid_post,blocks.29.resid_pre", position="all"
    )
    ids = model.tokenizer(text, return_tensors="pt")
    with torch.inference_mode():
        hs = model.hf(**ids, output_hidden_states=True).hidden_states
    torch.testing.assert_close(acts["blocks.0.resid_pre"], hs[0][0])
    torch.testing.assert_close(acts["blocks.14.resid_post"], hs[15][0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(acts["blocks.29.resid_pre"], hs[29][0], atol=1e-4, rtol=1e-4)


def test_any_inspect_task_runs_greedy_with_a_probe(
    model, shared_data: Path, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    rows = list(csv.DictReader((shared_data / "truth/datasets/cities.csv").open()))[:120]
    site = "blocks.12.resid_post"
    acts = model.capture([r["statement"] for r in rows], site, position="last", batch_size=32)
    probe = LinearProbe.fit(
        acts[site], [int(r["label"]) for r in rows], site, data="cities", model=model.name
    )
    probe.save(tmp_path / "cities-probe")
    log_dir = tmp_path / "logs"
    cmd = [
        str(Path(sys.executable).parent / "inspect"),
        "eval",
        "tasks/arithmetic.py",
        "--model",
        "safelab/default",
        "--temperature",
        "0",
        "--max-tokens",
        "12",
        "--epochs",
        "2",
        "-M",
        f"probe={tmp_path / 'cities-probe'}",
        "--log-dir",
        str(log_dir),
        "--log-format",
        "json",
        "--display",
        "none",
    ]
    subprocess.run(
        cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300, cwd=HERE
    )
    log = json.loads(next(log_dir.glob("*.json")).read_text())
    assert log["status"] == "success"
    by_epoch: dict[int, dict[str, str]] = {}
    for sample in log["samples"]:
        rec = sample["output"]["metadata"]["safelab"]["probes"]["cities-probe"]
        assert rec["site"] == site and len(rec["scores"]) == len(rec["tokens"]) > 0
        by_epoch.setdefault(sample["epoch"], {})[str(sample["id"])] = sample["output"]["choices"][
            0
        ]["message"]["content"]
    assert by_epoch[1] == by_epoch[2]  # greedy decoding: both epochs give the same text
    assert log["results"]["scores"][0]["metrics"]["accuracy"]["value"] >= 0.5
