"""``safelab anchors`` bad input: one line on stderr, exit 2 (tiny model folder, no network)."""

import json
from pathlib import Path

import pytest

from safelab.cli import main


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("safelab: error:") and fragment in err, err


def test_anchors_bad_inputs(
    tiny_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["anchors", "--model", str(tiny_folder), "--rollouts", "2", "--out", str(tmp_path / "o")]
    one = tmp_path / "one.jsonl"
    one.write_text(
        json.dumps({"question": "q?", "reasoning": "Just one sentence.", "answer": "a"}) + "\n"
    )
    none = tmp_path / "none.jsonl"
    none.write_text(json.dumps({"question": "q?", "reasoning": " ", "answer": "a"}) + "\n")
    long = tmp_path / "long.jsonl"
    long.write_text(
        json.dumps(
            {"question": "The quick brown fox. " * 40, "reasoning": "A b. C d.", "answer": "a"}
        )
        + "\n"
    )
    _one_line_error(capsys, [*base, "--data", str(one)], "has 1 sentence")
    _one_line_error(capsys, [*base, "--data", str(none)], "has 0 sentences")
    _one_line_error(capsys, [*base, "--data", str(long)], "exceeds")
    _one_line_error(capsys, [*base, "--data", str(tmp_path / "nope.jsonl")], "no such file")
    _one_line_error(capsys, [*base, "--rollouts", "1", "--data", str(one)], "at least 2 rollouts")
    # A prompt (with the default system prompt) longer than the tiny model's 128 positions.
    _one_line_error(capsys, [*base, "What is two plus two?"], "exceeds")
    # The random tiny model never writes an answer line: no usable trace, said so.
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"question": "What is two plus two?", "system": None}) + "\n")
    _one_line_error(capsys, [*base, "--data", str(questions)], "no traces to analyse")
