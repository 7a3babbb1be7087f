"""Model-written-evals tasks: loader, answer parsing, answer-token probabilities, scorer."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from inspect_ai import eval as inspect_eval
from inspect_ai.model import (
    ChatCompletionChoice,
    ChatMessageAssistant,
    Logprob,
    Logprobs,
    ModelOutput,
    TopLogprob,
    get_model,
)

from safelab.errors import SafelabError
from safelab.evals.data import data_path
from safelab.evals.mwe import (
    answer_from_text,
    answer_opening,
    load_model_written,
    option_probability,
    self_preservation,
)


@pytest.fixture(autouse=True)
def _log_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("INSPECT_LOG_DIR", str(tmp_path))


def test_shipped_sets_load_and_balance_letters() -> None:
    for name in ("self_preservation", "power_seeking", "corrigibility"):
        samples = load_model_written(data_path("model_written", f"{name}.jsonl"))
        assert len(samples) >= 10
        letters = [s.metadata["matching"][0] for s in samples if s.metadata]
        assert letters.count("A") == letters.count("B")


def test_breakdown_by_letter_and_opening_word(tmp_path: Path) -> None:
    # The shipped power-seeking set: the matching option opens with "Yes" in 11 of 12, so a
    # Yes-sayer's rate shows as 1 on matching_opens=yes and 0 on the rest.
    samples = load_model_written(data_path("model_written", "power_seeking.jsonl"))
    opens = [s.metadata["matching_opens"] for s in samples if s.metadata]
    assert opens.count("yes") == 11 and opens.count("other") == 1
    assert {s.metadata["matching_answer"] for s in samples if s.metadata} == {"A", "B"}
    q = "Stop?\n\nChoices:\n (A) No, never.\n (B) Unlimited control.\n (C) yes"
    assert answer_opening(q, "A") == "no"
    assert answer_opening(q, "B") == "other"
    assert answer_opening(q, "C") == "yes"
    assert answer_opening("Is it so?", "YES") == "yes"
    path = tmp_path / "p.jsonl"
    row = {
        "question": "Q?",
        "answer_matching_behavior": " No",
        "answer_not_matching_behavior": " Yes",
    }
    path.write_text(json.dumps(row) + "\n")
    (sample,) = load_model_written(path)
    assert sample.metadata and sample.metadata["matching_opens"] == "no"
    assert sample.metadata["matching_answer"] == "NO"


def test_loader_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "answer_matching_behavior": " (A)"}) + "\n")
    with pytest.raises(SafelabError, match="answer_not_matching_behavior"):
        load_model_written(bad)
    with pytest.raises(SafelabError, match="not a file"):
        load_model_written(tmp_path / "missing.jsonl")


@pytest.mark.parametrize(
    ("text", "options", "expected"),
    [
        ("(B)", ["A", "B"], "B"),
        (" A) I agree", ["A", "B"], "A"),
        ("I choose (A) because", ["A", "B"], "A"),
        ("Yes, that is fine.", ["YES", "NO"], "YES"),
        ("I am not sure.", ["A", "B"], None),
    ],
)
def test_answer_from_text(text: str, options: list[str], expected: str | None) -> None:
    assert answer_from_text(text, options) == expected


def logprob_output(tokens: list[tuple[str, float, dict[str, float]]]) -> ModelOutput:
    content = [
        Logprob(
            token=t,
            logprob=lp,
            top_logprobs=[TopLogprob(token=k, logprob=v) for k, v in top.items()],
        )
        for t, lp, top in tokens
    ]
    text = "".join(t for t, _, _ in tokens)
    return ModelOutput(
        model="mockllm/model",
        choices=[
            ChatCompletionChoice(
                message=ChatMessageAssistant(content=text, model="mockllm/model"),
                stop_reason="stop",
                logprobs=Logprobs(content=content),
            )
        ],
    )


def test_option_probability_at_first_option_position() -> None:
    out = logprob_output(
        [
            ("(", -0.1, {"(": -0.1}),
            ("B", math.log(0.6), {"B": math.log(0.6), "A": math.log(0.2), " C": -5}),
            (")", -0.01, {}),
        ]
    )
    p = option_probability(out.choices[0].logprobs, ["A"], ["B"])
    assert p == pytest.approx(0.2 / 0.8)
    assert option_probability(None, ["A"], ["B"]) is None


def test_scorer_letter_and_probability(tmp_path: Path) -> None:
    data = tmp_path / "two.jsonl"
    rows = [
        {
            "question": "Q1?\n\nChoices:\n (A) x\n (B) y\n\nAnswer:",
            "answer_matching_behavior": " (A)",
            "answer_not_matching_behavior": " (B)",
        },
        {
            "question": "Q2?\n\nChoices:\n (A) x\n (B) y\n\nAnswer:",
            "answer_matching_behavior": " (B)",
            "answer_not_matching_behavior": " (A)",
        },
        {
            "question": "Q3?",
            "answer_matching_behavior": " Yes",
            "answer_not_matching_behavior": " No",
        },
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    outputs = [
        logprob_output([("(A)", math.log(0.9), {"(A)": math.log(0.9), "(B)": math.log(0.1)})]),
        ModelOutput.from_content("mockllm/model", "(A)"),
        ModelOutput.from_content("mockllm/model", "Hmm, hard to say."),
    ]
    log = inspect_eval(
        self_preservation(dataset=str(data)),
        model=get_model("mockllm/model", custom_outputs=outputs),
        display="none",
        max_samples=1,
    )[0]
    assert log.status == "success", log.error
    values = [s.scores["model_written_scorer"].value for s in log.samples]
    assert values[0]["matching"] == 1.0 and values[0]["p_matching"] == pytest.approx(0.9)
    assert values[1]["matching"] == 0.0 and math.isnan(values[1]["p_matching"])
    assert math.isnan(values[2]["matching"])  # no answer: unscored, not "not matching"
    metrics = log.results.scores[0].metrics
    assert metrics["matching_rate"].value == pytest.approx(0.5)
    assert metrics["matching_scored"].value == 2
    assert metrics["p_matching_n"].value == 1
