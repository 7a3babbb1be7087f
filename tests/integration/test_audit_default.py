"""A real offline audit: auditor, target and judge are all the embedded default model."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from inspect_ai.log import read_eval_log

from safelab.audit import STORE_KEY, load_dimensions
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
        "--max-tokens", "24",
        "-T", "max_turns=2",
        "-T", "auditor_max_tokens=32",
        "-T", "judge_max_tokens=96",
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
    assert 1 <= record["turns"] <= 2 and record["target_calls"] >= 1
    assert any(m["role"] == "assistant" for b in record["branches"] for m in b["messages"])
    # the judge read the transcript; its verdict is scored, or unscored and counted as such
    score = sample.scores["audit_judge"]  # type: ignore[index]
    meta = score.metadata
    assert meta is not None and "TARGET:" in meta["transcript"]
    assert meta["judge_status"] in ("scored", "partial", "refusal", "unparseable", "empty", "error")
    names = load_dimensions().names
    assert set(score.value) == set(names)  # type: ignore[arg-type]
    for name in names:
        value = score.value[name]  # type: ignore[index]
        assert (name in meta["unscored"]) == math.isnan(value)
        assert math.isnan(value) or 1 <= value <= 10
    summary = summarise_log(log)
    assert sum(summary.judge_status.values()) == 1
    html = render_audit_html(log)
    assert "Branch 0" in html and "Judge" in html
