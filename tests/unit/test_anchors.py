"""Thought anchors: sentence split, answers, KL and intervals, attention views, a resumable run."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from safelab.anchors import importance as imp
from safelab.anchors.answers import extract_answer
from safelab.anchors.attention import (
    eager_attention,
    receiver_scores,
    segment_trace,
    sentence_attention,
    suppression_matrix,
)
from safelab.anchors.traces import Trace, split_sentences
from safelab.errors import SafelabError
from tests.tiny import tiny_model

TRACE = Trace(
    id="t0",
    question="What is two plus two?",
    reasoning="The quick brown fox. Two plus two is four. Paris is the capital of France.",
    answer="four",
    system=None,
)


def test_split_sentences_keeps_decimals() -> None:
    text = "First, 3.5 is small.  Then what?\nDone! "
    assert [text[a:b] for a, b in split_sentences(text)] == [
        "First, 3.5 is small.",
        "Then what?",
        "Done!",
    ]
    assert split_sentences("  ") == []


def test_extract_answer() -> None:
    assert extract_answer("so.\nAnswer: **Blue**.", ("red", "blue")) == "blue"
    assert extract_answer("Answer: green", ("red", "blue")) == "green"
    assert extract_answer("the answer is: 12.0 apples") == "12"
    assert extract_answer("I think it is blue.") is None
    assert extract_answer("Answer:   \n") is None


def test_kl_and_bootstrap() -> None:
    same = imp.kl_answers([0] * 10 + [1] * 10, [0] * 10 + [1] * 10, 2)
    assert same == pytest.approx(0.0)
    big = imp.kl_answers([1] * 20, [0] * 10 + [1] * 10, 2)
    # Laplace: p = (1/22, 21/22), q = (11/22, 11/22)
    p, q = np.array([1, 21]) / 22, np.array([11, 11]) / 22
    assert big == pytest.approx(float(np.sum(p * np.log(p / q))))
    lo, hi = imp.bootstrap_kl([1] * 20, [0] * 10 + [1] * 10, 2, seed=1)
    assert 0 < lo < big < hi
    assert np.isnan(imp.kl_answers([], [0, 1], 2))
    assert imp.ranks([0.1, float("nan"), 0.5, 0.1]) == [2, 4, 1, 3]


def test_one_sentence_trace_is_refused() -> None:
    with pytest.raises(SafelabError, match="1 sentence"):
        Trace(id="x", question="q", reasoning="Only one sentence here.", answer="a").check()
    with pytest.raises(SafelabError, match="0 sentences"):
        Trace(id="x", question="q", reasoning=" ", answer="a").check()


def test_segments_cover_sentences_and_answer() -> None:
    model = tiny_model("llama")
    seg = segment_trace(model, TRACE)
    assert len(seg.segments) == 4
    tok = model.tokenizer
    texts = [tok.decode(seg.ids[a:b]) for a, b in seg.segments]
    assert texts[1].strip() == "Two plus two is four."
    assert texts[3].strip() == "Answer: four"


def test_four_d_mask_matches_default_and_suppression_is_causal() -> None:
    model = tiny_model("llama")
    seg = segment_trace(model, TRACE)
    ids = torch.tensor([seg.ids])
    T = len(seg.ids)
    causal = torch.full((T, T), torch.finfo(torch.float32).min).triu(1)
    with eager_attention(model), torch.inference_mode():
        a = model.hf(input_ids=ids).logits
        b = model.hf(input_ids=ids, attention_mask=causal[None, None]).logits
    assert torch.allclose(a, b, atol=1e-5)
    assert model.hf.config._attn_implementation == "sdpa"  # restored after the block
    M = suppression_matrix(model, seg)
    assert M.shape == (3, 4)
    for i in range(3):
        assert np.allclose(M[i, : i + 1], 0.0, atol=1e-6)
        assert (M[i, i + 1 :] > 0).all()
    # With candidates, one more column: the KL of the answer over the categories at the answer.
    four = list(model.tokenizer(" four", add_special_tokens=False)["input_ids"])
    for cats in ([four[:1], [5]], [four, [5, 6, 7]]):  # first tokens only; whole sequences
        full = suppression_matrix(model, seg, cats)
        assert full.shape == (3, 5) and np.allclose(full[:, :4], M, atol=1e-5)
        assert (full[:, 4] > 0).all()
    first = model.tokenizer.decode([seg.ids[seg.answer_token]]).strip()
    assert first and "four".startswith(first)  # the answer value's first token


def test_sentence_attention_and_receivers() -> None:
    model = tiny_model("llama")
    seg = segment_trace(model, TRACE)
    att = sentence_attention(model, seg)
    assert att.shape == (3, 4, 4, 4)
    assert np.allclose(np.triu(att, 1), 0.0)  # causal: no attention to later segments
    score, heads, kurt = receiver_scores(att, proximity=2, top_k=5)
    assert score.shape == (3,) and len(heads) == 5 and kurt.shape == (3, 4)
    layer, head = heads[0]
    assert kurt[layer, head] == kurt.max()


def test_receiver_finds_a_planted_vertical_stripe() -> None:
    rng = np.random.default_rng(0)
    att = rng.uniform(0.0, 0.05, size=(2, 3, 7, 7))
    att[1, 2, 3:, 1] = 0.9  # one head: every later segment looks at sentence 1
    score, heads, _ = receiver_scores(np.tril(att), proximity=2, top_k=1)
    assert heads == [(1, 2)] and int(np.argmax(score)) == 1


def _write(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_run_resumes_and_counts_unscorable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safelab.anchors import rollouts
    from safelab.anchors.run import AnchorsConfig, run_anchors

    data = _write(
        tmp_path / "traces.jsonl",
        [
            TRACE.to_dict() | {"id": "a"},
            TRACE.to_dict() | {"id": "b", "planted": 1, "kind": "planted"},
        ],
    )
    cfg = AnchorsConfig(
        data=str(data), rollouts=3, max_new_tokens=6, embedder="model", n_boot=50, top_heads=4
    )
    model = tiny_model("llama")
    first = run_anchors(cfg, tmp_path / "run", model=model, progress=False)
    m = json.loads(first.metrics_path.read_text())
    assert m["config"]["rollouts"] == 3 and m["embedder"] == "model"
    assert len(m["traces"]) == 2
    ro = m["summary"]["rollouts"]
    # A random model never writes "Answer:": every rollout is unscorable, counted, none dropped.
    assert ro["total"] == 2 * 4 * 3 and ro["unscorable"] == ro["total"]
    t = m["traces"][0]
    assert all(e["value"] is None for e in t["resampling"])
    assert len(t["suppression"]) == 3 and len(t["receiver"]) == 3
    assert (tmp_path / "run" / "rollouts" / "a" / "0.json").is_file()
    assert "planted" in m["summary"] and m["summary"]["planted"]["n"] == 1

    # Resume: nothing is sampled again and the metrics are identical.
    def boom(*a: object, **k: object) -> None:
        raise AssertionError("resampled a cached prefix")

    import safelab.models.generation as gen

    monkeypatch.setattr(gen, "sample_continuations", boom)
    (tmp_path / "run" / "traces" / "a.json").unlink()  # the trace result, not its rollouts
    again = run_anchors(cfg, tmp_path / "run", model=model, progress=False)
    assert again.metrics["traces"] == m["traces"]
    # A second worker from the end reuses the same finished traces, in the same order.
    back = run_anchors(replace(cfg, from_end=True), tmp_path / "run", model=model, progress=False)
    assert back.metrics["traces"] == m["traces"]
    assert rollouts.Rollout  # module imported


def test_report_renders_in_chromium(tmp_path: Path) -> None:
    from safelab.anchors.report import write_report
    from tests.browser import dump_dom

    trace = {
        "id": "p1",
        "kind": "planted",
        "question": "Red or blue?",
        "sentences": ["A.", "B."],
        "answer": "blue",
        "correct": None,
        "planted": 1,
        "categories": ["blue", "red"],
        "prefixes": [
            {
                "k": k,
                "rollouts": 4,
                "unscorable": 1,
                "counts": {"blue": c, "red": 3 - c},
                "forced": {"blue": 0.5, "red": 0.5},
                "example": "",
            }
            for k, c in enumerate([1, 1, 3])
        ],
        "resampling": [{"value": 0.0, "lo": 0.0, "hi": 0.1}, {"value": 0.5, "lo": 0.2, "hi": 0.9}],
        "counterfactual": [
            {"value": 0.0, "lo": 0.0, "hi": 0.1},
            {"value": None, "lo": None, "hi": None},
        ],
        "forced": [{"value": 0.1, "lo": None, "hi": None}, {"value": 0.4, "lo": None, "hi": None}],
        "receiver": [
            {"value": 0.2, "lo": None, "hi": None},
            {"value": 0.1, "lo": None, "hi": None},
        ],
        "suppression": [
            {"value": 0.3, "lo": None, "hi": None},
            {"value": 0.2, "lo": None, "hi": None},
        ],
        "suppression_matrix": [[0.0, 0.0, 0.3], [0.0, 0.0, 0.2]],
        "receiver_attention": [[1.0, 0, 0], [0.5, 0.5, 0], [0.2, 0.6, 0.2]],
        "ranks": {
            m: [2, 1] for m in ("resampling", "counterfactual", "forced", "receiver", "suppression")
        },
        "anchors": [1],
    }
    metrics = {
        "model": "tiny",
        "embedder": "model",
        "config": {"rollouts": 4},
        "anchor_rule": "lo >= 0.1",
        "summary": {
            "seed": 0,
            "rollouts": {"total": 12, "unscorable": 3, "unscorable_rate": 0.25},
            "agreement": {},
        },
        "skipped": [],
        "traces": [trace],
    }
    page = write_report(metrics, tmp_path / "report.html")
    html = page.read_text()
    assert "<script" not in html and "http" not in html.replace("http-equiv", "")
    dom = dump_dom(page, tmp_path / "profile")
    assert "Thought anchors" in dom and "Answer distribution per prefix" in dom
    assert "Suppression KL" in dom and "planted" in dom
    assert "0.500 [0.200, 0.900]" in dom


def test_weight_rows_match_counts_and_expected_elicitation() -> None:
    kept, resampled = [1] * 15 + [0] * 5, [0] * 10 + [1] * 10
    oh = imp.one_hot(kept, 2), imp.one_hot(resampled, 2)
    assert imp.kl_weights(*oh) == pytest.approx(imp.kl_answers(kept, resampled, 2))
    assert imp.bootstrap_kl_weights(*oh, seed=3) == imp.bootstrap_kl(kept, resampled, 2, seed=3)
    # Twenty elicited rollouts each 70/30 count as 14/6, not as whatever twenty draws gave.
    soft = np.tile([0.3, 0.7], (20, 1))
    assert imp.kl_weights(soft, oh[1]) == pytest.approx(
        imp.kl_counts(np.array([6.0, 14.0]), np.array([10.0, 10.0]))
    )


def test_fewshot_history_reaches_the_chat_and_round_trips() -> None:
    from safelab.anchors.problems import problems

    rows = problems("comparison", 40, seed=1)
    shown = {u for u, _ in rows[0]["history"]}
    assert len(shown) == 2 and not shown & {r["question"] for r in rows}
    t = Trace.from_dict({**rows[0], "reasoning": "One. Two.", "answer": rows[0]["correct"]})
    roles = [m["role"] for m in t.messages()]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
    assert t.messages()[2]["content"].endswith("Answer: 58")
    assert Trace.from_dict(t.to_dict()) == t and Trace.from_dict(t.to_dict()).history == t.history
    with pytest.raises(SafelabError, match="history entry"):
        Trace.from_dict({**t.to_dict(), "history": [["only the question"]]})


def test_categories_are_scored_by_all_their_tokens() -> None:
    """Numbers share their first token in SmolLM2 (`` 84`` is ``' ', '8', '4'``): score them whole."""
    from safelab.anchors.rollouts import category_logprobs, prefix_cache

    model = tiny_model("llama")
    ids = list(model.tokenizer("The sum is", add_special_tokens=False)["input_ids"])
    cats = [[5, 9], [5, 11, 12], [7]]
    fresh = category_logprobs(model, ids, cats)
    cached = category_logprobs(model, ids[-1:], cats, prefix_cache(model, ids))
    assert torch.allclose(fresh, cached, atol=1e-4)
    with torch.inference_mode():
        logp = torch.log_softmax(model.hf(input_ids=torch.tensor([[*ids, 5, 11]])).logits[0], -1)
    whole = logp[len(ids) - 1, 5] + logp[len(ids), 11] + logp[len(ids) + 1, 12]
    assert float(fresh[1]) == pytest.approx(float(whole), abs=1e-4)
    assert fresh[0] != fresh[1]  # same first token, different categories
    single = category_logprobs(model, ids, [[5], [7]])
    assert torch.allclose(single, torch.stack([logp[len(ids) - 1, 5], logp[len(ids) - 1, 7]]))


def test_report_only_expected_recounts_elicited_rollouts(tmp_path: Path) -> None:
    from safelab.anchors.run import AnchorsConfig, expected_resampling

    def ro(answer: str, probs: dict[str, float] | None = None) -> dict[str, object]:
        return {"answer": answer, "elicited": probs is not None, "probs": probs}

    prefixes = [
        [ro("a", {"a": 0.5, "b": 0.5})] * 4,  # before sentence 0: elicited, drawn "a", 50/50
        [ro("b")] * 4,  # written answers
        [ro("b")] * 4,
    ]
    for k, rows in enumerate(prefixes):
        path = tmp_path / "t" / f"{k}.json"
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"rollouts": rows}))
    r = {
        "id": "t",
        "sentences": ["One.", "Two."],
        "categories": ["a", "b"],
        "ranks": {},
        "anchors_by_method": {},
    }
    cfg = AnchorsConfig(rollouts=4, n_boot=20)
    got = expected_resampling(r, tmp_path, cfg)
    want = imp.kl_counts(np.array([0.0, 4.0]), np.array([2.0, 2.0]))  # not [4, 0] as drawn
    assert got["resampling"][0]["value"] == pytest.approx(want)
    assert got["resampling"][1]["value"] == pytest.approx(0.0)
    assert got["ranks"]["resampling"] == [1, 2]
