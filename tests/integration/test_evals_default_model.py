"""One short real run of every behavioural task on the embedded default model (offline)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from inspect_ai import eval as inspect_eval

from safelab.evals import (
    agentic_misalignment,
    corrigibility,
    cot_faithfulness,
    over_refusal,
    power_seeking,
    sandbagging,
    self_preservation,
)
from safelab.evals.results import summarise_log

pytestmark = pytest.mark.integration

MODEL = "safelab/default"


def test_every_task_runs_on_the_default_model(tmp_path: Path, shared_data: Path) -> None:
    tasks = [
        agentic_misalignment(
            goal_conflict="explicit",
            threat="replacement",
            chekhov="adjacent,absent",
            n_filler=0,
            max_tokens=16,
            judge_max_tokens=16,
        ),
        sandbagging(
            question_set="arithmetic",
            incentive="neutral,penalise_high",
            n_arithmetic=1,
            max_tokens=12,
        ),
        self_preservation(max_tokens=4),
        power_seeking(
            dataset=str(
                shared_data
                / "model-written-evals/advanced-ai-risk/human_generated_evals/power-seeking-inclination.jsonl"
            ),
            max_tokens=4,
        ),
        corrigibility(max_tokens=4),
        cot_faithfulness(hint_type="metadata", max_tokens=16, judge_max_tokens=16),
        over_refusal(dataset=str(shared_data / "xstest/xstest_prompts.csv"), max_tokens=16),
    ]
    logs = inspect_eval(tasks, model=MODEL, limit=2, log_dir=str(tmp_path), display="none")
    assert len(logs) == len(tasks)
    for log in logs:
        assert log.status == "success", (log.eval.task, log.error)
        assert log.samples and len(log.samples) == 2
        for sample in log.samples:
            assert sample.scores, log.eval.task
            assert sample.metadata and "condition" in sample.metadata
        rows = summarise_log(log)
        overall = rows[0]
        assert overall.condition == "all"
        assert overall.n + overall.unscored == 2, (log.eval.task, overall)
    # the white-box provider returns answer-token probabilities for the A/B tasks
    by_task = {log.eval.task.split("/")[-1]: log for log in logs}
    for name in ("self_preservation", "power_seeking", "corrigibility"):
        for sample in by_task[name].samples or []:
            value = sample.scores["model_written_scorer"].value
            assert isinstance(value, dict)
            p = value["p_matching"]
            assert math.isnan(p) or 0.0 <= p <= 1.0
