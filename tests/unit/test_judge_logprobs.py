"""Probability-weighted judge scores: the score position, the expected value, a two-token 10,
the low-mass rule and the text fallback; end to end on mockllm and on a tiny random model."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from inspect_ai import Task, eval
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.log import read_eval_log
from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessageAssistant,
    Logprob,
    Logprobs,
    ModelOutput,
    TopLogprob,
    get_model,
)
from inspect_ai.solver import generate

from safelab.errors import SafelabError
from safelab.judging import SCORE_PREFILL, WEIGHTED_INSTRUCTION, score_position, weighted_score
from safelab.monitors.judge_monitor import NO_LOGPROBS_NOTE, check_scoring, judge_monitor

Top = list[tuple[str, float]]


def _lp(steps: list[tuple[str, Top]]) -> Logprobs:
    """Logprobs of a completion: each step's written token and its top tokens (probabilities)."""
    return Logprobs(
        content=[
            Logprob(
                token=tok,
                logprob=math.log(dict(top).get(tok, 1e-9)),
                top_logprobs=[TopLogprob(token=t, logprob=math.log(p)) for t, p in top],
            )
            for tok, top in steps
        ]
    )


def _output(steps: list[tuple[str, Top]]) -> ModelOutput:
    text = "".join(t for t, _ in steps)
    return ModelOutput(
        model="mockllm/model",
        choices=[
            ChatCompletionChoice(
                message=ChatMessageAssistant(content=text, model="mockllm/model"),
                stop_reason="stop",
                logprobs=_lp(steps),
            )
        ],
    )


def test_expected_value_and_mass_at_the_score_position() -> None:
    ws = weighted_score(_lp([(" 7", [(" 7", 0.6), (" 3", 0.2), (" hello", 0.1)])]))
    assert ws is not None and ws.prefilled and ws.position == 0
    assert ws.mass == pytest.approx(0.8)
    assert ws.expected == pytest.approx((7 * 0.6 + 3 * 0.2) / 0.8)
    # a blank token first: the score is the next token; "7" and " 7" are one value
    ws = weighted_score(_lp([(" ", [(" ", 0.9)]), ("5", [("5", 0.5), (" 5", 0.1), ("x", 0.3)])]))
    assert ws is not None and ws.position == 1 and ws.probs == {5: pytest.approx(0.6)}
    # out of range and non-numbers carry no mass
    ws = weighted_score(_lp([("12", [("12", 0.7), ("-1", 0.1), ("4", 0.1)])]))
    assert ws is not None and ws.probs == {4: pytest.approx(0.1)}


def test_score_position_without_a_prefill() -> None:
    """A provider that opens a new turn (OpenAI's chat API) writes its own SCORE line."""
    lp = _lp([("SCORE", [("SCORE", 1.0)]), (":", [(":", 1.0)]), (" 4", [(" 4", 0.7), (" 6", 0.3)])])
    assert score_position(lp) == 2
    ws = weighted_score(lp)
    assert ws is not None and not ws.prefilled and ws.expected == pytest.approx(4.6)
    # no prefill at all: the first non-blank token; only blanks: no score position
    assert score_position(_lp([(" ", [(" ", 1.0)]), ("I", [("I", 1.0)])]), "") == 1
    assert score_position(_lp([(" ", [(" ", 1.0)])]), "") is None


def test_two_token_ten() -> None:
    """A tokenizer that splits digits writes 10 as 1, 0: P(10) = P(1) x P(0 | 1)."""
    steps = [
        ("1", [("1", 0.8), ("9", 0.2)]),
        ("0", [("0", 0.5), ("<|im_end|>", 0.4), ("5", 0.1)]),
    ]
    ws = weighted_score(_lp(steps))
    assert ws is not None
    assert ws.probs[10] == pytest.approx(0.4) and ws.probs[1] == pytest.approx(0.32)
    assert ws.mass == pytest.approx(0.4 + 0.32 + 0.2)  # "15" (0.08) is out of range
    assert "P(0 | 1)" in ws.note
    # a one-token "10" among the top tokens: "1" is 1
    ws = weighted_score(_lp([("10", [("10", 0.5), ("1", 0.5)]), ("0", [("0", 1.0)])]))
    assert ws is not None and ws.probs == {10: 0.5, 1: 0.5} and not ws.note


def test_scoring_names_are_checked() -> None:
    assert check_scoring("auto") == "auto"
    with pytest.raises(SafelabError, match="text, logprobs, auto"):
        check_scoring("logits")


def _judged(tmp_path: Path, outputs: list[ModelOutput], **kwargs: object) -> list:  # type: ignore[type-arg]
    """Each sample: the target's reply (scripted), then the judge's outputs (scripted)."""
    model = get_model("mockllm/model", custom_outputs=outputs)
    n = kwargs.pop("n")
    task = Task(
        dataset=MemoryDataset([Sample(input=f"q{i}") for i in range(int(n))]),  # type: ignore[call-overload]
        solver=generate(),
        scorer=judge_monitor(**kwargs),  # type: ignore[arg-type]
    )
    (log,) = eval(task, model=model, log_dir=str(tmp_path), display="none", max_samples=1)
    assert log.status == "success", log.error
    return [s.scores["judge_monitor"] for s in read_eval_log(log.location).samples or []]  # type: ignore[index]


def test_judge_monitor_logprobs_scored_low_mass_and_text_fallback(tmp_path: Path) -> None:
    reply = ModelOutput.from_content("mockllm/model", "the reply")
    outputs = [
        reply,
        _output([(" 8", [(" 8", 0.7), (" 2", 0.2), ("ok", 0.1)])]),
        reply,
        _output([(" I", [(" I", 0.8), (" 3", 0.2)])]),  # mostly not a score: unscored
        reply,
        ModelOutput.from_content("mockllm/model", "SCORE: 6"),  # no logprobs: the text call
        ModelOutput.from_content("mockllm/model", "Looks fine.\nSCORE: 3"),
    ]
    got = _judged(tmp_path, outputs, n=3, scoring="logprobs")
    assert got[0].value == pytest.approx((8 * 0.7 + 2 * 0.2) / 0.9 / 10)
    assert got[0].metadata["judge_scoring"] == "logprobs"
    assert got[0].metadata["judge_score_mass"] == pytest.approx(0.9)
    assert got[0].metadata["judge_score_probs"] == {"2": pytest.approx(0.2), "8": 0.7}
    assert math.isnan(float(got[1].value))  # never a silent 0
    assert "judge_low_mass" in str(got[1].answer) and "0.200 < 0.5" in str(got[1].answer)
    assert got[1].metadata["judge_score_mass"] == pytest.approx(0.2)
    assert got[2].value == pytest.approx(0.3)
    assert got[2].metadata["judge_scoring"] == "text"
    assert got[2].metadata["judge_scoring_note"] == NO_LOGPROBS_NOTE


def test_judge_monitor_asks_for_the_token_after_one(tmp_path: Path) -> None:
    """The judge wrote 9 but 1 had mass: a second call reads the token after "1"."""
    outputs = [
        ModelOutput.from_content("mockllm/model", "the reply"),
        _output([("9", [("9", 0.6), ("1", 0.4)])]),
        _output([("0", [("0", 0.75), ("\n", 0.25)])]),
    ]
    (got,) = _judged(tmp_path, outputs, n=1, scoring="logprobs", min_mass=0.1)
    probs = got.metadata["judge_score_probs"]
    assert probs == {"1": pytest.approx(0.1), "9": 0.6, "10": pytest.approx(0.3)}
    assert got.value == pytest.approx((0.1 + 5.4 + 3.0) / 1.0 / 10)


def test_text_and_auto_keep_parsing_text_on_api_judges(tmp_path: Path) -> None:
    outputs = [
        ModelOutput.from_content("mockllm/model", "the reply"),
        ModelOutput.from_content("mockllm/model", "SCORE: 4"),
    ]
    (got,) = _judged(tmp_path, outputs, n=1, scoring="auto")
    assert got.value == pytest.approx(0.4) and got.metadata["judge_scoring"] == "text"
    assert "judge_scoring_note" not in got.metadata


def _reference(model, prompt: str) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """The weighted score and mass computed directly from the model's logits (full vocab)."""
    chat = [
        {"role": "user", "content": prompt + WEIGHTED_INSTRUCTION},
        {"role": "assistant", "content": SCORE_PREFILL},
    ]
    text = model.render_chat(chat, continue_final_message=True)
    tok = model.tokenizer
    ids = tok(text, add_special_tokens=False)["input_ids"]

    def probs(ids: list[int]) -> torch.Tensor:
        with torch.no_grad():
            logits = model.hf(torch.tensor([ids])).logits[0, -1]
        return torch.softmax(logits.float(), dim=-1)

    p = probs(ids)
    while not tok.decode([int(p.argmax())]).strip() or tok.decode([int(p.argmax())]) == "*":
        ids = [*ids, int(p.argmax())]  # blank tokens before the score
        p = probs(ids)
    values = {i: int(tok.decode([i]).strip()) for i in range(len(tok))
              if tok.decode([i]).strip().isdigit() and int(tok.decode([i]).strip()) <= 10}  # fmt: skip
    dist = {v: 0.0 for v in range(11)}
    for i, v in values.items():
        dist[v] += float(p[i])
    one = [i for i, v in values.items() if v == 1]
    best = max(one, key=lambda i: float(p[i]))
    after = probs([*ids, best])
    zero = sum(float(after[i]) for i in range(len(tok)) if tok.decode([i]) == "0")
    end = sum(float(after[i]) for i in range(len(tok)) if not tok.decode([i])[:1].isdigit())
    dist[10] += dist[1] * zero
    dist[1] *= end
    mass = sum(dist.values())
    return sum(k * q for k, q in dist.items()) / mass, mass


def test_weighted_score_on_a_tiny_random_model(tmp_path: Path, tiny_folder: Path) -> None:
    """The provider's logprobs give the score computed from the logits; at the default
    min_mass a random model (mass ~ 11/300) is unscored, never a low score."""
    from safelab.provider.batcher import shared_model

    template = tmp_path / "judge.md"
    template.write_text("Judge: {{ transcript }}")
    outputs = [ModelOutput.from_content("mockllm/model", "ok") for _ in range(2)]

    def run(**kwargs: object) -> object:
        task = Task(
            dataset=MemoryDataset([Sample(input="hi")]),
            solver=generate(),
            scorer=judge_monitor(template=str(template), scoring="logprobs", **kwargs),  # type: ignore[arg-type]
        )
        (log,) = eval(
            task,
            model=get_model("mockllm/model", custom_outputs=list(outputs)),
            model_roles={"judge": f"safelab/{tiny_folder}"},
            log_dir=str(tmp_path / "logs"),
            display="none",
        )
        assert log.status == "success", log.error
        return read_eval_log(log.location).samples[0].scores["judge_monitor"]  # type: ignore[index]

    model = shared_model(str(tiny_folder), "auto", None)  # the provider's copy
    full = run(top_logprobs=len(model.tokenizer), min_mass=0.0)
    expected, mass = _reference(model, "Judge: [user] hi\n\n[assistant] ok")
    assert full.metadata["judge_score_mass"] == pytest.approx(mass, abs=1e-5)  # type: ignore[attr-defined]
    assert full.value == pytest.approx(expected / 10, abs=1e-5)  # type: ignore[attr-defined]
    assert 0 < mass < 0.5
    low = run()
    assert math.isnan(float(low.value))  # type: ignore[attr-defined]
    assert "judge_low_mass" in str(low.answer)  # type: ignore[attr-defined]


def test_audit_dimension_weighted_score_low_mass_and_text_fallback() -> None:
    """The audit judge's per-dimension answer (1..10 after ``Score (1-10):``) weighted."""
    import asyncio

    from safelab.audit.budgets import JudgeBudgets
    from safelab.audit.judge import judge_dimension

    budgets = JudgeBudgets("per_dimension", 256, 24, prefill=True)
    outputs = [
        _output([(" 7", [(" 7", 0.5), (" 2", 0.3), (" x", 0.2)])]),
        _output([(" I", [(" I", 0.9), (" 3", 0.1)])]),
        ModelOutput.from_content("mockllm/model", "no logprobs here"),
        ModelOutput.from_content("mockllm/model", ' 4 "quote" because'),
    ]
    judge = get_model("mockllm/model", custom_outputs=outputs)

    async def ask() -> object:
        return await judge_dimension(judge, "rate it", budgets, "a quote here", "logprobs")

    scored, low, text = (asyncio.run(ask()) for _ in range(3))
    assert scored.score == pytest.approx((7 * 0.5 + 2 * 0.3) / 0.8)  # type: ignore[attr-defined]
    assert scored.source == "per_dimension_logprobs"  # type: ignore[attr-defined]
    assert scored.score_mass == pytest.approx(0.8)  # type: ignore[attr-defined]
    assert low.score is None and low.status == "low_mass"  # type: ignore[attr-defined]
    assert low.score_mass == pytest.approx(0.1)  # type: ignore[attr-defined]
    assert text.score == 4 and text.source == "per_dimension"  # type: ignore[attr-defined]
    assert text.score_mass is None  # type: ignore[attr-defined]


def test_audit_dimension_without_a_prefill_reads_the_first_token() -> None:
    """API judges get no prefill (some providers reject one): the answer starts with the score."""
    import asyncio

    from safelab.audit.budgets import JudgeBudgets
    from safelab.audit.judge import judge_dimension

    budgets = JudgeBudgets("per_dimension", 1024, 256, prefill=False)
    outputs = [_output([("7", [("7", 0.6), ("3", 0.4)]), (" because", [(" because", 1.0)])])]
    judge = get_model("mockllm/model", custom_outputs=outputs)
    got = asyncio.run(judge_dimension(judge, "rate it", budgets, "", "logprobs"))
    assert got.score == pytest.approx(5.4) and got.score_mass == pytest.approx(1.0)
