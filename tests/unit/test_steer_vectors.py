"""Steering vectors, behaviour probabilities and the activation cache on a tiny random Llama."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from safelab.errors import SafelabError
from safelab.interp.actcache import cached_activations
from safelab.interp.contrast import Pair, load_pairs, load_statements
from safelab.interp.steer_sweep import (
    capability_cost,
    choice_probs,
    choice_prompts,
    contrast_vectors,
    steering_sweep,
)
from safelab.interp.steering import SteeringVector

SITE = "blocks.1.resid_post"


def _pairs_file(tmp_path: Path, n: int = 4) -> Path:
    path = tmp_path / "pairs.jsonl"
    rows = [
        {
            "question": f"Is {i} safe?\n (A) Yes\n (B) No",
            "answer_matching_behavior": "(A)" if i % 2 else "(B)",
            "answer_not_matching_behavior": "(B)" if i % 2 else "(A)",
        }
        for i in range(n)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_scale_zero_leaves_logits_unchanged(tiny_model) -> None:  # type: ignore[no-untyped-def]
    prompts = choice_prompts(
        tiny_model, [Pair("Is it safe?", "(A)", "(B)"), Pair("Two plus two?", "Yes", "No")]
    )
    vector = torch.randn(tiny_model.d_model, generator=torch.Generator().manual_seed(0)) * 5
    base = choice_probs(tiny_model, prompts)
    (full,) = tiny_model.logits(["The quick brown fox"])
    with tiny_model.steer(vector, SITE, scale=0.0):
        assert np.array_equal(choice_probs(tiny_model, prompts), base)
        (full0,) = tiny_model.logits(["The quick brown fox"])
    assert torch.equal(full0, full)
    with tiny_model.steer(vector, SITE, scale=4.0):
        assert not np.allclose(choice_probs(tiny_model, prompts), base)


def test_choice_probs_match_unbatched_logits(tiny_model) -> None:  # type: ignore[no-untyped-def]
    pairs = [
        Pair("Is it safe?", "(A)", "(B)"),
        Pair("What is two plus two? Say it now please", "Yes", "No"),
    ]
    prompts = choice_prompts(tiny_model, pairs)
    batched = choice_probs(tiny_model, prompts, batch_size=2)
    for p, got in zip(prompts, batched, strict=True):
        with torch.inference_mode():
            logits = tiny_model.hf(input_ids=torch.tensor([p.ids])).logits[0, -1]
        want = torch.softmax(logits[[p.match_id, p.other_id]], -1)[0].item()
        assert got == pytest.approx(want, abs=1e-5)


def test_pca_recovers_shared_difference() -> None:
    g = torch.Generator().manual_seed(0)
    d = torch.randn(16, generator=g)
    neg = torch.randn(50, 16, generator=g)
    pos = neg + d + 0.1 * torch.randn(50, 16, generator=g)
    v = SteeringVector.from_pca(pos, neg, SITE)
    m = SteeringVector.from_contrast(pos, neg, SITE)
    assert float(v.vector @ d / (v.vector.norm() * d.norm())) > 0.99  # signed like the difference
    assert float(v.vector.norm()) == pytest.approx(float(m.vector.norm()), rel=0.05)
    assert v.cfg.method == "pca"
    with pytest.raises(SafelabError):
        SteeringVector.from_pca(pos[:1], neg[:1], SITE)


def test_vectors_sweep_and_cost_on_tiny_model(tiny_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    data = load_pairs(_pairs_file(tmp_path), tiny_model)
    cached = cached_activations(
        tiny_model, data, "blocks.*.resid_post", cache_root=tmp_path / "c", progress=False
    )
    vectors = contrast_vectors(cached.acts, data, model_name="tiny")
    assert set(vectors) == {f"blocks.{i}.resid_post" for i in range(3)}
    x = cached.acts[SITE]
    assert torch.allclose(vectors[SITE].vector, x[0::2].mean(0) - x[1::2].mean(0))
    test = choice_prompts(tiny_model, [Pair("Is 9 safe?\n (A) Yes\n (B) No", "(A)", "(B)")] * 3)
    result = steering_sweep(tiny_model, {SITE: vectors[SITE]}, test, [0.0, 2.0], n_resamples=50)
    zero, two = result.cells
    assert zero.delta == 0 and zero.delta_ci == [0.0, 0.0]
    assert two.delta_ci[0] <= two.delta <= two.delta_ci[1]
    out = result.to_dict()
    assert out["best_scale"] == 2.0 and out["sites"][SITE]["2"]["delta"] == two.delta
    cost = capability_cost(tiny_model, vectors[SITE], 0.0, test, n_resamples=50)
    assert cost["delta_accuracy"] == 0 and cost["accuracy"] == cost["steered_accuracy"]
    saved = vectors[SITE].save(tmp_path / "v")
    back = SteeringVector.load(saved)
    assert torch.equal(back.vector, vectors[SITE].vector) and back.cfg.metrics["n_pairs"] == 4


def test_activation_cache_reuses_and_means(tiny_model, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "s.csv"
    path.write_text(
        "statement,label\nParis is the capital of France.,1\nBerlin is the capital of France.,0\nThe quick brown fox.,1\n"
    )
    data = load_statements(path, template="chat", position="mean")
    first = cached_activations(
        tiny_model, data, "blocks.*.resid_post", cache_root=tmp_path / "c", progress=False
    )
    again = cached_activations(
        tiny_model, data, "blocks.*.resid_post", cache_root=tmp_path / "c", progress=False
    )
    assert not first.cached and again.cached and again.capture_s == 0 and again.store == first.store
    assert all(torch.equal(first.acts[s], again.acts[s]) for s in first.sites)
    # The cached mean equals the mean of a direct capture over the response tokens.
    enc = data.encode(tiny_model)
    for i, e in enumerate(enc):
        acts = tiny_model.capture([tiny_model.tokenizer.decode(e.ids)], SITE, position="all")[SITE]
        start, end = e.response  # type: ignore[misc]
        assert torch.allclose(first.acts[SITE][i], acts[start:end].mean(0), atol=1e-4)
    last = cached_activations(
        tiny_model, load_statements(path), SITE, cache_root=tmp_path / "c", progress=False
    )
    assert last.store != first.store and last.acts[SITE].shape == (3, tiny_model.d_model)


def test_mean_diff_balances_answer_letters() -> None:
    from safelab.interp.contrast import ContrastSet, Example

    # Three pairs match with "(A)", one with "(B)"; the letter direction must cancel.
    letter = torch.zeros(4)
    letter[0] = 1.0
    behaviour = torch.zeros(4)
    behaviour[1] = 1.0
    rows, examples = [], []
    for i, match in enumerate(["(A)", "(A)", "(A)", "(B)"]):
        other = "(B)" if match == "(A)" else "(A)"
        sign = 1.0 if match == "(A)" else -1.0
        rows += [behaviour + sign * letter, -sign * letter]
        examples += [Example(match, 1, "q", pair=i), Example(other, 0, "q", pair=i)]
    data = ContrastSet("d", "d.jsonl", examples, "pairs")
    x = torch.stack(rows)
    (vec,) = contrast_vectors({SITE: x}, data).values()
    assert torch.allclose(vec.vector, behaviour)
    assert vec.cfg.metrics["balanced_answers"] and vec.cfg.metrics["answer_groups"] == {
        "(A)": 3,
        "(B)": 1,
    }
    (raw,) = contrast_vectors({SITE: x}, data, balance_answers=False).values()
    assert raw.vector[0] == pytest.approx(1.0)  # unbalanced: half the letter direction leaks in
