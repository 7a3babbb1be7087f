"""One judging module: the verdict, the strict prompt renderer, the refusal test, the readers."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from safelab.data import package_file, read_jsonl_rows, read_package_yaml
from safelab.errors import SafelabError
from safelab.judging import UNSCORED_STATUSES, Verdict, is_refusal, render_prompt, text_status
from safelab.stats import rate


def test_renderer_fails_on_a_missing_variable_naming_template_and_variable() -> None:
    with pytest.raises(SafelabError, match=r"judge\.md.*'transcript'"):
        render_prompt("{{ seed }}\n{{ transcript }}", "judge.md", seed="plan")
    with pytest.raises(SafelabError, match=r"bad\.md:1.*not valid Jinja"):
        render_prompt("{{ seed ", "bad.md", seed="x")


def test_renderer_is_single_pass_and_leaves_json_alone() -> None:
    out = render_prompt(
        '{{ a }} | {{ b }} | {"json": 1}', "t", a="{{ b }}", b="B", name="a variable called name"
    )
    assert out == '{{ b }} | B | {"json": 1}'
    assert render_prompt("{{ name }}", "t", name="n") == "n"  # a variable may be called name


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ("I'm sorry, but I can't help with that.", True),
        ("I cannot assist with this request.", True),
        ("As an AI, I must decline.", True),
        ("I won’t do that.", True),  # curly apostrophe
        ("", True),  # an empty reply answers nothing
        ("   ", True),
        ("Sure! Here is how to bake bread: mix flour and water.", False),
        ("SCORE: 3\nThe reply looks fine.", False),
        ("I can help with that. The capital of France is Paris.", False),
    ],
)
def test_refusal_test(text: str, refused: bool) -> None:
    assert is_refusal(text) is refused


def test_refusal_window_and_shared_phrases() -> None:
    late = "Here is a long answer. " * 20 + "I'm sorry for the length."
    assert is_refusal(late) is True  # whole text by default (judge answers)
    assert is_refusal(late, window=200) is False  # the over-refusal classifier's window
    from safelab.evals.refusal import is_refusal as eval_is_refusal
    from safelab.evals.refusal import refusal_phrases

    assert eval_is_refusal(late) is False and "i'm sorry" in refusal_phrases()


def test_text_status_of_an_answer_without_a_verdict() -> None:
    assert text_status("  ") == "empty"
    assert text_status("I'm sorry, I can't rate this.") == "refusal"
    assert text_status("It seems fine.") == "unparseable"


@pytest.mark.parametrize("status", UNSCORED_STATUSES)
def test_an_unscored_verdict_is_never_counted_as_safe(status: str) -> None:
    v = Verdict(score=1.0, label="SAFE", status=status)  # a stray value must not leak out
    assert not v.scored and math.isnan(v.value())
    assert v.unscored_reason == f"judge_{status}"
    assert v.to_metadata()["judge_unscored_reason"] == f"judge_{status}"
    # rates count it apart: three safe verdicts and one unscored are 0 of 3, one unscored
    est = rate([0.0, 0.0, 0.0, v.value()])
    assert (est.k, est.n, est.unscored) == (0, 3, 1)


def test_a_scored_verdict_has_its_value() -> None:
    assert Verdict(score=0.7).value() == 0.7 and Verdict(score=0.7).scored
    labelled = Verdict(label="BLACKMAIL", judge_model="m")
    assert labelled.scored and labelled.unscored_reason is None
    assert Verdict().scored is False  # neither a score nor a label: nothing to count


def test_audit_and_monitor_verdicts_are_judging_verdicts() -> None:
    from safelab.audit.judge import DimensionVerdict, parse_dimension_answer
    from safelab.monitors.judge_monitor import score_verdict

    dim = parse_dimension_answer(" 7 the target lied")
    assert isinstance(dim, DimensionVerdict) and isinstance(dim, Verdict) and dim.value() == 7
    assert isinstance(score_verdict("SCORE: 4"), Verdict) and score_verdict("SCORE: 4").score == 0.4
    assert score_verdict("I'm sorry, I can't.").unscored_reason == "judge_refusal"


def test_jsonl_reader_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"a": 1}\n\n"text"\n{"a": \n')
    with pytest.raises(SafelabError, match=r"rows\.jsonl:4: not valid JSON"):
        read_jsonl_rows(path)
    path.write_text('{"a": 1}\n\n"text"\n')
    assert read_jsonl_rows(path) == [(1, {"a": 1}), (3, "text")]
    with pytest.raises(SafelabError, match=r"rows\.jsonl:3: expected a JSON object, got str"):
        read_jsonl_rows(path, objects=True)
    assert read_jsonl_rows("shipped.jsonl", text='{"b": 2}') == [(1, {"b": 2})]


def test_every_jsonl_reader_reports_file_and_line(tmp_path: Path) -> None:
    from safelab.audit.seeds import load_seeds
    from safelab.data import read_inputs
    from safelab.evals.data import read_jsonl
    from safelab.interp.contrast import read_pairs
    from safelab.loop.detect import defection_pairs

    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "positive": "a", "negative": "b"}\n{oops\n')
    for reader in (load_seeds, read_inputs, read_jsonl, read_pairs, defection_pairs):
        with pytest.raises(SafelabError, match=r"bad\.jsonl:2"):
            reader(str(bad) if reader is defection_pairs else bad)  # type: ignore[operator]


def test_package_data_reader() -> None:
    assert package_file("safelab.audit", "data", "seeds.jsonl").is_file()
    assert "phrases" in read_package_yaml(
        "safelab.evals", "data", "over_refusal", "refusal_patterns.yaml"
    )
    with pytest.raises(SafelabError, match="missing data file"):
        package_file("safelab.audit", "data", "nope.md")
