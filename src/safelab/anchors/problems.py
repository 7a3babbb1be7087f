"""Short reasoning problems for real traces, and the model writing its own trace for a question.

``comparison``: which of two numbers (1-99) is larger, the options being the two numbers;
``addition``: the sum of two one-digit numbers. Both generated from a seed, with the correct
answer, so the model's accuracy on them is measured, not assumed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from safelab.anchors.answers import extract_answer
from safelab.anchors.traces import (
    ANSWER_PREFIX,
    DEFAULT_SYSTEM,
    Trace,
    parse_history,
    split_sentences,
)
from safelab.errors import SafelabError

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel

PROBLEM_KINDS = ("comparison", "addition")


def fewshot(kind: str) -> tuple[str, list[list[str]]]:
    """The system prompt and worked examples (``data/fewshot.yaml``) for problems of ``kind``."""
    from importlib import resources

    import yaml

    spec = yaml.safe_load(
        resources.files("safelab.anchors").joinpath("data/fewshot.yaml").read_text()
    )
    return str(spec["system"]), [[e["user"], e["assistant"]] for e in spec[kind]]


def problems(kind: str, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` question rows (``question``, ``options``, ``correct``, few-shot ``system`` and
    ``history``) of ``kind``; none repeats a worked example's question."""
    if kind not in PROBLEM_KINDS:
        raise SafelabError(f"unknown problem kind {kind!r}: use {', '.join(PROBLEM_KINDS)}")
    system, history = fewshot(kind)
    shown = {u for u, _ in history}
    rng = np.random.default_rng(seed)
    rows: list[dict[str, Any]] = []
    while len(rows) < n:
        if kind == "comparison":
            a, b = (int(x) for x in rng.choice(np.arange(1, 100), 2, replace=False))
            if f"Which number is larger: {a} or {b}?" in shown:
                continue
            rows.append(
                {
                    "id": f"cmp-{len(rows):03d}",
                    "question": f"Which number is larger: {a} or {b}?",
                    "options": [str(a), str(b)],
                    "correct": str(max(a, b)),
                }
            )
        elif kind == "addition":
            a, b = (int(x) for x in rng.integers(1, 10, 2))
            if f"What is {a} + {b}?" in shown:
                continue
            rows.append(
                {
                    "id": f"add-{len(rows):03d}",
                    "question": f"What is {a} + {b}?",
                    "correct": str(a + b),
                }
            )
    return [{**r, "system": system, "history": history} for r in rows]


def write_trace(
    model: WhiteBoxModel,
    row: dict[str, Any],
    *,
    temperature: float = 0.6,
    top_p: float = 0.95,
    max_new_tokens: int = 96,
    attempts: int = 4,
    seed: int = 0,
) -> tuple[Trace | None, list[str]]:
    """The model's own trace for a question row: the first sample with an answer line and at
    least two reasoning sentences, or ``None`` (and the samples) when no attempt had both."""
    from safelab.models.generation import GenerationRequest, generate_batch

    options = tuple(str(o) for o in row.get("options") or ())
    base = Trace(
        id=str(row.get("id", "prompt")),
        question=str(row["question"]),
        reasoning="",
        answer="",
        options=options,
        system=row.get("system", DEFAULT_SYSTEM),
        kind=str(row.get("kind", "real")),
        correct=row.get("correct"),
        meta=dict(row.get("meta") or {}),
        history=parse_history(row.get("history"), str(row.get("id", "prompt"))),
    )
    from safelab.anchors.rollouts import context_length

    prompt = model.render_chat(base.messages(), add_generation_prompt=True)
    n_prompt = len(model.tokenizer(prompt, add_special_tokens=False)["input_ids"])
    if n_prompt + max_new_tokens > context_length(model):
        raise SafelabError(
            f"question {base.id!r}: {n_prompt} prompt tokens + {max_new_tokens} new exceeds "
            f"{model.name}'s context of {context_length(model)}: shorten the prompt"
        )
    req = GenerationRequest(
        max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
    )
    texts = [r.text for r in generate_batch(model, [prompt] * attempts, req)]
    for text in texts:
        answer = extract_answer(text, options)
        cut = text.lower().find(ANSWER_PREFIX.lower())
        if answer is None or cut < 0:
            continue
        reasoning = text[:cut].strip()
        if len(split_sentences(reasoning)) >= 2:
            return replace(base, reasoning=reasoning, answer=answer), texts
    return None, texts


def accuracy(
    model: WhiteBoxModel,
    rows: Sequence[dict[str, Any]],
    samples: int = 4,
    seed: int = 0,
    max_new_tokens: int = 96,
) -> dict[str, Any]:
    """The model's accuracy on ``rows`` at temperature 0.6: per sample, unscorable counted apart."""
    from safelab.models.generation import GenerationRequest, generate_batch
    from safelab.stats import wilson_interval

    correct = wrong = unscorable = 0
    for i, row in enumerate(rows):
        t = Trace(
            id="acc",
            question=row["question"],
            reasoning="",
            answer="",
            system=row.get("system", DEFAULT_SYSTEM),
            history=parse_history(row.get("history")),
        )
        prompt = model.render_chat(t.messages(), add_generation_prompt=True)
        req = GenerationRequest(
            max_new_tokens=max_new_tokens, temperature=0.6, top_p=0.95, seed=seed + i
        )
        for r in generate_batch(model, [prompt] * samples, req):
            a = extract_answer(r.text, tuple(row.get("options") or ()))
            if a is None:
                unscorable += 1
            elif a == str(row["correct"]):
                correct += 1
            else:
                wrong += 1
    n = correct + wrong + unscorable
    lo, hi = wilson_interval(correct, n) if n else (float("nan"), float("nan"))
    return {
        "samples": n,
        "correct": correct,
        "wrong": wrong,
        "unscorable": unscorable,
        "accuracy": correct / n if n else None,
        "accuracy_ci": [lo, hi],
        "seed": seed,
    }
