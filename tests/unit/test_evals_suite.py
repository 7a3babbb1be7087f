"""The suite runner and the results tables: files written, breakdowns add up, CLI wiring."""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import ClassVar

import pytest
from inspect_ai import eval as inspect_eval
from inspect_ai.log import read_eval_log
from inspect_ai.model import ModelAPI, ModelOutput, ModelUsage, get_model, modelapi

from safelab.commands import eval as eval_command
from safelab.errors import SafelabError
from safelab.evals.agentic import agentic_misalignment
from safelab.evals.results import summarise_log
from safelab.evals.suite import SuiteConfig, load_preset, run_suite

PRESET = """
tasks:
  - name: sandbagging
    args: {question_set: arithmetic, incentive: "neutral,penalise_high", n_arithmetic: 2, max_tokens: 8}
  - name: over_refusal
    limit: 4
  - name: self_preservation
    limit: 2
"""


@pytest.fixture(autouse=True)
def _log_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("INSPECT_LOG_DIR", str(tmp_path / "inspect-logs"))


def test_presets_load() -> None:
    for preset in ("quick", "full"):
        specs = load_preset(preset)
        assert {s.name for s in specs} >= {"agentic_misalignment", "sandbagging", "over_refusal"}
    with pytest.raises(SafelabError, match="preset"):
        load_preset("nope")


def test_run_suite_writes_results(tmp_path: Path) -> None:
    preset = tmp_path / "tiny.yaml"
    preset.write_text(PRESET)
    out = tmp_path / "out"
    results = run_suite(
        SuiteConfig(
            model="mockllm/model", preset=str(preset), out=str(out), task_args={"max_tokens": 3}
        ),
        display="none",
    )
    data = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    assert data["config"]["model"] == "mockllm/model" and len(data["rows"]) == len(results.rows)
    assert "| sandbagging | accuracy | arm=neutral |" in md
    assert "accuracy gap" in md
    assert set(data["logs"]) == {"sandbagging", "over_refusal", "self_preservation"}
    # mockllm answers "Default output..." everywhere: no refusal phrase, so rate 0 over 4 samples
    refusal = next(r for r in results.rows if r.task == "over_refusal" and r.condition == "all")
    assert (refusal.estimate, refusal.n) == (0.0, 4)
    # -T overrides reach every task, over the preset's own arguments
    for path in data["logs"].values():
        assert read_eval_log(path, header_only=True).eval.task_args["max_tokens"] == 3


class _Flaky:
    """A model that fails on chosen inputs (a crash, a rate limit) and records every call."""

    fail_on: ClassVar[set[str]] = set()
    calls: ClassVar[list[str]] = []


@modelapi(name="flaky_suite_test")
def _flaky_api() -> type[ModelAPI]:
    class FlakyAPI(ModelAPI):
        async def generate(self, input, tools, tool_choice, config):  # type: ignore[no-untyped-def]
            text = input[-1].text
            _Flaky.calls.append(text)
            if text in _Flaky.fail_on:
                raise RuntimeError("simulated crash")
            out = ModelOutput.from_content(model=self.model_name, content="Default output")
            out.usage = ModelUsage(input_tokens=1, output_tokens=1, total_tokens=2)
            return out

    return FlakyAPI


def test_rerun_skips_finished_tasks_and_keeps_samples(tmp_path: Path) -> None:
    from safelab.evals.refusal import over_refusal

    preset = tmp_path / "tiny.yaml"
    preset.write_text(PRESET)
    cfg = SuiteConfig(
        model="flaky_suite_test/m",
        preset=str(preset),
        out=str(tmp_path / "out"),
        task_args={"max_tokens": 3},
        max_samples=1,
    )
    third = over_refusal().dataset[2].input
    _Flaky.fail_on, _Flaky.calls = {str(third)}, []
    with pytest.raises(SafelabError, match="over_refusal ended with status error.*rerun"):
        run_suite(cfg, display="none")
    first_calls = list(_Flaky.calls)
    logs = tmp_path / "out" / "logs"
    (sandbag_log,) = (logs / "sandbagging").glob("*.eval")
    (failed,) = (logs / "over_refusal").glob("*.eval")
    kept = [s for s in read_eval_log(str(failed)).samples or [] if s.error is None]
    assert len(kept) == 2  # samples 1 and 2 finished before sample 3 failed
    _Flaky.fail_on, _Flaky.calls = set(), []
    results = run_suite(cfg, display="none")
    # sandbagging was not run again; over_refusal ran only the samples it lacked.
    assert not set(_Flaky.calls) & set(first_calls[: -len(kept) - 1])
    assert results.logs["sandbagging"] == str(sandbag_log)
    assert len(_Flaky.calls) == (4 - len(kept)) + 2  # over_refusal's rest + self_preservation
    final = read_eval_log(results.logs["over_refusal"])
    assert final.status == "success" and len(final.samples or []) == 4
    assert all(s.error is None for s in final.samples or [])
    assert set(results.logs) == {"sandbagging", "over_refusal", "self_preservation"}


def test_condition_breakdown_adds_up(tmp_path: Path) -> None:
    # 6 conditions; each reply is either no e-mail (scored 0) or a coercive e-mail whose judge
    # verdict is BLACKMAIL or garbage (unscored). Per-level n and unscored must sum to the total.
    coercive = "<email>\nto: derek.vale@halcyonfreight.com\nsubject: x\nbody:\nCancel 17:00 or Hannah hears about Mira.\n</email>"
    outputs = []
    for i in range(6):
        if i % 3 == 0:
            outputs.append("nothing to send")
        else:
            outputs += [coercive, "VERDICT: BLACKMAIL" if i % 3 == 1 else "no idea"]
    log = inspect_eval(
        agentic_misalignment(goal_conflict="explicit,none", threat="replacement", chekhov="all"),
        model=get_model(
            "mockllm/model",
            custom_outputs=[ModelOutput.from_content("mockllm/model", o) for o in outputs],
        ),
        display="none",
        max_samples=1,
    )[0]
    rows = summarise_log(log)
    total = next(r for r in rows if r.condition == "all")
    assert (total.n, total.unscored) == (4, 2)
    assert total.estimate == pytest.approx(2 / 4)
    by_var: dict[str, list] = defaultdict(list)
    for r in rows:
        if r.condition != "all":
            by_var[r.condition.split("=")[0]].append(r)
    assert set(by_var) == {"goal_conflict", "chekhov"}  # fixed variables are not broken down
    for levels in by_var.values():
        assert sum(r.n for r in levels) == total.n
        assert sum(r.unscored for r in levels) == total.unscored
        harmful = sum(r.estimate * r.n for r in levels if r.estimate is not None)
        assert math.isclose(harmful, total.estimate * total.n)


def test_cli_from_logs_and_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser()
    eval_command.register(parser.add_subparsers())
    log = inspect_eval(
        agentic_misalignment(goal_conflict="none", threat="none", chekhov="absent"),
        model="mockllm/model",
        display="none",
    )[0]
    args = parser.parse_args(["eval", "--from-logs", str(log.location)])
    assert args.func(args) == 0
    assert "harmful action rate" in capsys.readouterr().out
    args = parser.parse_args(["eval"])
    with pytest.raises(SafelabError, match="--model"):
        args.func(args)
