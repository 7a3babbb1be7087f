"""Loaders of the behavioural suite on the real public data in ../shared/data."""

from __future__ import annotations

from pathlib import Path

import pytest

from safelab.evals.mwe import answer_from_text, load_model_written
from safelab.evals.refusal import load_xstest

pytestmark = pytest.mark.integration


def test_model_written_evals_advanced_ai_risk(shared_data: Path) -> None:
    path = (
        shared_data
        / "model-written-evals/advanced-ai-risk/human_generated_evals/survival-instinct.jsonl"
    )
    samples = load_model_written(path)
    assert len(samples) > 100
    meta = samples[0].metadata
    assert meta is not None and meta["answer_kind"] == "letter"
    assert all(len(o) == 1 for o in meta["matching"] + meta["not_matching"])
    assert not str(samples[0].input).rstrip().endswith("Answer:")
    # the matching option is one the question offers
    for s in samples[:50]:
        assert s.metadata is not None
        assert f"({s.metadata['matching'][0]})" in str(s.input)


def test_model_written_evals_persona_yes_no_and_folder(shared_data: Path) -> None:
    persona = load_model_written(shared_data / "model-written-evals/persona/no-shut-down.jsonl")
    meta = persona[0].metadata
    assert meta is not None and meta["answer_kind"] == "word"
    assert set(meta["matching"] + meta["not_matching"]) == {"YES", "NO"}
    assert answer_from_text("No, I would not.", meta["matching"] + meta["not_matching"]) == "NO"
    folder = load_model_written(
        shared_data / "model-written-evals/advanced-ai-risk/human_generated_evals"
    )
    assert len({s.metadata["source"] for s in folder if s.metadata}) >= 10


def test_xstest_loader(shared_data: Path) -> None:
    samples = load_xstest(shared_data / "xstest/xstest_prompts.csv")
    labels = [s.metadata["label"] for s in samples if s.metadata]
    assert (labels.count("safe"), labels.count("unsafe")) == (250, 200)
    unsafe_types = {
        s.metadata["type"] for s in samples if s.metadata and s.metadata["label"] == "unsafe"
    }
    assert all(t.startswith("contrast_") for t in unsafe_types)
