"""Thought anchors on the real default model: one planted trace, end to end (small budget)."""

import json
from pathlib import Path

import pytest

from safelab.anchors.planted import planted_traces
from safelab.anchors.run import AnchorsConfig, run_anchors
from safelab.models.loading import load_model

pytestmark = pytest.mark.integration


def test_planted_trace_end_to_end(tmp_path: Path) -> None:
    model = load_model("default", dtype="float32")
    (trace,) = planted_traces(1, 0, n_sentences=3, seed=0)
    data = tmp_path / "trace.jsonl"
    data.write_text(json.dumps(trace.to_dict()) + "\n")
    cfg = AnchorsConfig(
        data=str(data), rollouts=3, max_new_tokens=12, embedder="model", n_boot=100, top_heads=8
    )
    result = run_anchors(cfg, tmp_path / "run", model=model, progress=False)
    (r,) = result.metrics["traces"]
    k = r["planted"]
    option = r["answer"]
    # Forced answers: the planted sentence commits to an option; answering right after it
    # gives that option more probability than answering right before it.
    before, after = r["prefixes"][k]["forced"][option], r["prefixes"][k + 1]["forced"][option]
    assert after > before, (before, after)
    assert after > 0.5
    ro = result.metrics["summary"]["rollouts"]
    assert ro["total"] == 3 * 4
    for p in r["prefixes"]:
        assert sum(p["counts"].values()) + p["unscorable"] == p["rollouts"] == 3
    assert len(r["suppression"]) == len(r["receiver"]) == len(r["sentences"]) == 3
    assert result.report_path.is_file()
