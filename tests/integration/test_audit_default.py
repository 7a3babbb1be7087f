"""A real offline audit: auditor, target and judge are all the embedded default model.

Budgets are the ``local`` defaults the task resolves for ``safelab/`` models, with one auditor
turn instead of two to keep CI short (about 1-3 minutes on 2 shared cores).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from inspect_ai.event import ModelEvent
from inspect_ai.log import read_eval_log

from safelab.audit import STORE_KEY, load_dimensions
from safelab.audit.budgets import LOCAL_DEFAULTS
from safelab.audit.judge import DIMENSION_PREFILL
from safelab.audit.summary import summarise_log
from safelab.audit.view import render_audit_html

pytestmark = pytest.mark.integration
INSPECT = Path(sys.executable).with_name("inspect")


def test_audit_on_default_model_all_roles(tmp_path: Path) -> None:
    cmd = [
        str(INSPECT), "eval", "safelab/audit",
        "--model", "safelab/default",
        "--model-role", "auditor=safelab/default",
        "--model-role", "judge=safelab/default",
        "--limit", "1",
        "-T", "max_turns=1",
        "--log-dir", str(tmp_path),
        "--display", "none",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    [log_file] = list(tmp_path.glob("*.eval"))
    log = read_eval_log(str(log_file))
    assert log.status == "success", log.error
    assert log.samples is not None
    sample = log.samples[0]
    record = sample.store[STORE_KEY]
    # the audit ran within its budget and the target answered through Inspect's model API
    assert record["ended_by"] in ("auditor", "turn_budget", "token_budget")
    assert record["turns"] == 1 and record["target_calls"] >= 1
    assert any(m["role"] == "assistant" for b in record["branches"] for m in b["messages"])
    # budgets: the local defaults for safelab/ models, except the explicit max_turns
    used = sample.metadata["audit_budgets"]
    assert used["sources"]["max_turns"] == "task option"
    assert used["auditor_max_tokens"] == LOCAL_DEFAULTS.auditor_max_tokens
    assert used["target_max_tokens"] == LOCAL_DEFAULTS.target_max_tokens
    calls = [e for e in sample.events if isinstance(e, ModelEvent)]
    for e in calls:
        cap = e.config.max_tokens
        assert e.output.usage is not None and e.output.usage.output_tokens <= (cap or 0)
    # the judge read the transcript, asked per dimension with a prefilled "Score (1-10):"
    score = sample.scores["audit_judge"]  # type: ignore[index]
    meta = score.metadata
    assert meta is not None and "TARGET:" in meta["transcript"]
    assert meta["judge_budgets"]["judge_mode"] == "per_dimension"
    judge_calls = [e for e in calls if e.role == "judge"]
    names = load_dimensions().names
    assert len(judge_calls) == len(names) == meta["judge_calls"]
    assert all(e.input[-1].text == DIMENSION_PREFILL for e in judge_calls)
    assert set(score.value) == set(names)  # type: ignore[arg-type]
    for name in names:
        value = score.value[name]  # type: ignore[index]
        verdict = meta["dimensions"][name]
        assert (name in meta["unscored"]) == math.isnan(value)
        if math.isnan(value):
            assert verdict["status"] in ("unparseable", "out_of_range", "refusal", "empty")
        else:
            # a real score: the number the judge wrote first, after the prefill
            assert 1 <= value <= 10 and verdict["source"] == "per_dimension"
            assert verdict["raw"].lstrip(" *").startswith(str(int(value)))
    # greedy decoding: the 135M judge writes a whole number first for some dimensions (measured
    # 2 of 9 in this configuration; see docs/audit.md), so at least one carries a real score
    assert meta["score_sources"].get("per_dimension", 0) >= 1, meta["score_sources"]
    summary = summarise_log(log)
    assert sum(summary.judge_status.values()) == 1
    assert sum(summary.score_sources.values()) == len(names)
    html = render_audit_html(log)
    assert "Branch 0" in html and "Judge" in html
