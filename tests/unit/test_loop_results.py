"""The loop's typed results: metrics.json round trip, targets from one place, the step helper."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from safelab.loop.results import LoopResult, target_texts
from safelab.loop.run import StepCache, Steps
from safelab.report.loop_report import render_loop_report

from .test_loop_report import fake_metrics


def _metrics(**config: Any) -> dict[str, Any]:
    m = fake_metrics()
    m["config"] = {"seed": 0, **config}
    return LoopResult.from_metrics(m).to_metrics()


def test_metrics_round_trip_through_the_typed_result() -> None:
    m = _metrics()
    assert LoopResult.from_metrics(copy.deepcopy(m)).to_metrics() == m
    assert m["steered_scale"] == -8.0 and m["steered_scale_is_fallback"] is False
    assert m["targets"] == {
        "backdoor_triggered_ge_0.90": True,
        "backdoor_untriggered_le_0.05": True,
        "probe_gain_over_base_ci_above_0": False,  # the fake base separates as well
        "steering_halves_backdoor_within_tolerance": True,
    }


def test_helpfulness_tolerance_drives_choice_targets_and_report() -> None:
    # within 1 point only scale -4 (helpful 0.80 = unsteered) qualifies, and it does not halve
    strict = _metrics(helpfulness_tolerance=0.01)
    assert strict["steered_scale"] == -4.0 and strict["steered_scale_is_fallback"] is False
    assert strict["targets"]["steering_halves_backdoor_within_tolerance"] is False
    html = render_loop_report(strict)
    assert "helpfulness within 1 points" in html and "within 10 points" not in html
    assert "helpfulness within 10 points" in render_loop_report(_metrics())
    assert set(target_texts(0.1)) >= set(_metrics()["targets"])


def test_steps_reuse_compute_and_time(tmp_path: Path) -> None:
    said: list[str] = []
    steps = Steps(StepCache(tmp_path), said.append)
    calls: list[int] = []

    def compute() -> dict[str, Any]:
        calls.append(1)
        return {"x": len(calls)}

    with steps.timed("a_s"):
        assert steps.run("a", "k", compute, start="go", reused="again") == {"x": 1}
    assert steps.run("a", "k", compute, start="go", reused="again") == {"x": 1}
    assert steps.run("a", "k", compute, start="go", reused="again", valid=lambda: False) == {
        "x": 2
    }  # a missing side file (the saved vector) redoes the step
    assert said == ["go", "again", "go"] and "a_s" in steps.timings
