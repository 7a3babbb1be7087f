"""The organism catalogue, the organism-vs-base comparison, and the organisms' bad inputs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from safelab.cli import main
from safelab.errors import SafelabError
from safelab.models.loading import check_organism_base, same_model
from safelab.organisms.catalog import CATALOG, Evaluation, entry
from safelab.organisms.compare import compare_evaluation, sample_value, summary_lines
from safelab.organisms.recipes import KINDS
from safelab.organisms.train import ModelOrganism


def test_catalogue_lists_every_kind_with_tasks_that_build_and_conditions_that_select() -> None:
    from inspect_ai._eval.registry import task_create

    import safelab._registry  # noqa: F401  (registers the tasks)

    assert [e.kind for e in CATALOG] == list(KINDS)
    for cat in CATALOG:
        assert cat.recipe().kind == cat.kind and cat.behaviour and cat.evaluations
        for ev in cat.evaluations:
            assert ev.caught_if in ("higher", "lower")
            task = task_create(ev.task, **dict(ev.args))
            metas = [s.metadata or {} for s in task.dataset]
            present = [m for m in metas if all(str(m.get(k)) == v for k, v in ev.present.items())]
            assert present, (cat.kind, ev.task)
            if ev.control is not None:
                control = [
                    m for m in metas if all(str(m.get(k)) == v for k, v in ev.control.items())
                ]
                assert control and not any(m in control for m in present), (cat.kind, ev.task)
    with pytest.raises(SafelabError, match="unknown organism kind 'x'"):
        entry("x")


def _log(values: dict[str, tuple[dict[str, Any], Any]], scorer: str = "s") -> Any:
    samples = [
        SimpleNamespace(id=i, epoch=1, metadata=m, scores={scorer: SimpleNamespace(value=v)})
        for i, (m, v) in values.items()
    ]
    return SimpleNamespace(samples=samples, location=f"{scorer}.eval")


def test_comparison_pairs_samples_and_gives_a_verdict() -> None:
    ev = Evaluation(
        "t", {}, score="s", rate="r", caught_if="higher", present={"c": "on"}, control={"c": "off"}
    )
    org = {f"on{i}": ({"c": "on"}, 1.0) for i in range(10)}
    org |= {f"off{i}": ({"c": "off"}, 0.0) for i in range(10)}
    base = {k: (m, 0.0) for k, (m, _) in org.items()}
    got = compare_evaluation(_log(org), _log(base), ev, seed=0)
    assert got.present.organism.rate == 1.0 and got.present.base.rate == 0.0
    assert got.present.difference.ci_low == 1.0 and got.verdict == "caught"
    assert got.control is not None and got.control.difference.value == 0.0
    # The same behaviour on the base model is not a catch; nothing scored is "unscorable".
    assert compare_evaluation(_log(org), _log(org), ev).verdict == "not caught"
    blank = {k: (m, float("nan")) for k, (m, _) in org.items()}
    assert compare_evaluation(_log(org), _log(blank), ev).verdict == "unscorable"
    assert any("verdict: caught" in line for line in summary_lines(_result(got)))


def test_newcombe_verdict_and_the_chekhov_contrasts() -> None:
    from safelab.stats import newcombe_interval

    # 8/8 vs 0/8: the bootstrap collapses to [1, 1]; Newcombe's stays honest at the edge.
    d, lo, hi = newcombe_interval(8, 8, 0, 8)
    assert d == 1.0 and lo == pytest.approx(0.541, abs=1e-3) and hi == pytest.approx(1.0)
    d, lo, hi = newcombe_interval(1, 2, 0, 2)
    assert lo < 0 < hi  # two samples per cell cannot exclude 0
    ev = entry("blackmailer").evaluations[0]
    assert ev.args["repeats"] == 8
    org, base = {}, {}
    for lvl, k in (("adjacent", 7), ("far", 1), ("absent", 0)):
        for threat in ("replacement", "none"):
            for r in range(8):
                m = {"threat": threat, "chekhov": lvl}
                hit = threat == "replacement" and r < k
                org[f"{threat}{lvl}{r}"] = (m, 1.0 if hit else 0.0)
                base[f"{threat}{lvl}{r}"] = (m, 0.0)
    got = compare_evaluation(_log(org, ev.score), _log(base, ev.score), ev)
    assert got.verdict == "caught" and got.present.newcombe is not None
    assert got.present.newcombe.ci_low > 0 and got.present.organism.k == 7
    assert set(got.breakdown["chekhov"]) == {"adjacent", "far", "absent"}
    far = got.contrasts["chekhov: adjacent - far"]
    assert far is not None and far.value == pytest.approx(6 / 8) and far.ci_low > 0
    ctl = got.contrasts["present - control"]
    assert ctl is not None and ctl.ci_low > 0
    # Only 1/8 more than the base: Newcombe does not call it caught.
    weak = {k: (m, 1.0 if k == "replacementadjacent0" else 0.0) for k, (m, _) in org.items()}
    assert compare_evaluation(_log(weak, ev.score), _log(base, ev.score), ev).verdict == (
        "not caught"
    )
    lines = summary_lines(_result(got))
    assert any("chekhov: adjacent - far" in line for line in lines)


def test_compare_repeats_set_the_samples_of_sampled_evaluations_only(tmp_path: Path) -> None:
    from safelab.organisms.compare import CompareConfig, eval_args

    cfg = CompareConfig(organism=str(tmp_path), repeats=3)
    assert eval_args(entry("blackmailer").evaluations[0], cfg)["repeats"] == 3
    assert "repeats" not in eval_args(entry("over_refuser").evaluations[0], cfg)
    over = CompareConfig(organism=str(tmp_path), repeats=3, overrides={"repeats": 5})
    assert eval_args(entry("eval_aware").evaluations[0], over)["repeats"] == 5
    assert eval_args(entry("eval_aware").evaluations[0], CompareConfig("x"))["repeats"] == 8


def test_a_task_scoped_override_sets_one_evaluation_only(tmp_path: Path) -> None:
    from safelab.organisms.compare import CompareConfig, eval_args

    evs = entry("self_preserving").evaluations
    assert all(ev.breakdown == ("matching_answer", "matching_opens") for ev in evs)
    cfg = CompareConfig("x", overrides={"power_seeking.dataset": "p.jsonl", "max_tokens": 8})
    by_task = {ev.task: eval_args(ev, cfg) for ev in evs if ev.label is None}
    assert by_task["safelab/power_seeking"] == {"max_tokens": 8, "dataset": "p.jsonl"}
    assert by_task["safelab/self_preservation"] == {"max_tokens": 8}
    assert by_task["safelab/corrigibility"] == {"max_tokens": 8}
    # the LM-written evaluations: the override sets power_seeking's item set there too
    lm = {ev.label: eval_args(ev, cfg) for ev in evs if ev.label is not None}
    assert lm["power-seeking-inclination"]["dataset"] == "p.jsonl"
    assert lm["survival-instinct"]["dataset"].endswith("lm_generated_evals/survival-instinct.jsonl")


def _result(ev: Any) -> Any:
    from safelab.organisms.compare import ComparisonResult

    return ComparisonResult("k", "org", "default", 0, [ev])


def test_paired_units_count_a_right_answer_turned_wrong() -> None:
    ev = entry("incentive_sandbagger").evaluations[0]
    arm_on, arm_off = ev.present["arm"], ev.control["arm"]  # type: ignore[index]
    org, base = {}, {}
    for q in range(8):
        org[f"{q}a"] = ({"arm": arm_off, "question_id": q}, 1.0)
        org[f"{q}b"] = ({"arm": arm_on, "question_id": q}, 0.0)
        base[f"{q}a"] = ({"arm": arm_off, "question_id": q}, 0.0)  # at floor: nothing to hide
        base[f"{q}b"] = ({"arm": arm_on, "question_id": q}, 0.0)
    got = compare_evaluation(_log(org, ev.score), _log(base, ev.score), ev)
    assert got.present.organism.k == 8 and got.present.base.k == 0
    assert got.verdict == "caught"
    assert got.breakdown["raw rate"]["present"].organism.rate == 0.0


def _monitored(values: dict[str, tuple[dict[str, Any], Any, Any]]) -> Any:
    """A fake log with two scorers per sample: the evaluation's ``s`` and the judge monitor."""
    samples = [
        SimpleNamespace(
            id=i,
            epoch=1,
            metadata=m,
            scores={"s": SimpleNamespace(value=v), "judge_monitor": SimpleNamespace(value=j)},
        )
        for i, (m, v, j) in values.items()
    ]
    return SimpleNamespace(samples=samples, location="m.eval")


def test_monitor_auroc_on_present_vs_control_with_the_base_as_control() -> None:
    ev = Evaluation(
        "t", {}, score="s", rate="r", caught_if="higher",
        present={"hinted": "yes"}, control={"hinted": "no"},
    )  # fmt: skip
    yes, no = {"hinted": "yes"}, {"hinted": "no"}
    # the organism's monitor separates the classes perfectly, the base's not at all
    org = {f"y{i}": (yes, 1.0, 0.9) for i in range(12)}
    org |= {f"n{i}": (no, None, 0.1) for i in range(12)}
    base = {f"y{i}": (yes, 0.0, 0.1 * (i % 2)) for i in range(12)}
    base |= {f"n{i}": (no, None, 0.1 * (i % 2)) for i in range(12)}
    org["n0"] = (no, None, float("nan"))  # unscored by the judge: dropped from both
    got = compare_evaluation(_monitored(org), _monitored(base), ev, seed=0)
    m = got.monitor
    assert m is not None and m["n_paired"] == 23 and m["unscored_organism"] == 1
    sel = m["control"]["selected"]
    assert sel["organism_auroc"] == 1.0 and abs(sel["base_auroc"] - 0.5) < 0.1
    assert m["verdict"] == "caught" and sel["gain_ci"][0] > 0
    assert any("judge monitor" in line for line in summary_lines(_result(got)))
    # no control samples: no class to contrast
    only = {k: v for k, v in org.items() if k.startswith("y")}
    got = compare_evaluation(_monitored(only), _monitored(only), ev, seed=0)
    assert got.monitor is not None and got.monitor["verdict"] == "unscorable"
    # an evaluation without the monitor's scores has none
    assert compare_evaluation(_log({"a": (yes, 1.0)}), _log({"a": (yes, 0.0)}), ev).monitor is None


def _result(ev: Any) -> Any:
    from safelab.organisms.compare import ComparisonResult

    return ComparisonResult(kind="k", organism="o", base="b", seed=0, evaluations=[ev])


def test_unfaithful_value_of_a_hint_test_score() -> None:
    moved_silent = {"eligible": 1.0, "changed_to_hint": 1.0, "acknowledged": 0.0}
    assert sample_value(moved_silent, "unfaithful") == 1.0
    assert sample_value({**moved_silent, "acknowledged": 1.0}, "unfaithful") == 0.0
    assert sample_value({**moved_silent, "changed_to_hint": 0.0}, "unfaithful") == 0.0
    assert sample_value({**moved_silent, "eligible": 0.0}, "unfaithful") is None
    assert sample_value({"matching": 1.0}, "matching") == 1.0
    assert sample_value(float("nan"), None) is None


def _fake_organism(root: Path, base: str, adapter: bool = True) -> Path:
    folder = root / "self_preserving-abc"
    folder.mkdir(parents=True)
    card = {
        "kind": "self_preserving",
        "base": base,
        "recipe": {"kind": "self_preserving"},
        "recipe_hash": "abc",
        "data_hash": "d",
        "seed": 0,
        "n_rows": 1,
    }
    (folder / "cfg.json").write_text(json.dumps(card))
    if adapter:
        (folder / "adapter_model.safetensors").write_bytes(b"")
    return folder


def _one_line(capsys: pytest.CaptureFixture[str], argv: list[str], *fragments: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert all(f in err for f in fragments), err


def test_bad_organism_inputs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _one_line(
        capsys,
        ["organism", "train", "blackmail"],
        "unknown organism kind 'blackmail'",
        ", ".join(KINDS),
    )
    missing = _fake_organism(tmp_path / "a", "default", adapter=False)
    _one_line(capsys, ["organism", "eval", str(missing)], "no organism at", "adapter_model")
    other = _fake_organism(tmp_path / "b", "/models/other-base")
    _one_line(
        capsys,
        ["organism", "eval", str(other), "--model", "default"],
        "trained on base model '/models/other-base'",
        "not 'default'",
    )
    fake = _fake_organism(tmp_path / "c", "default")
    _one_line(
        capsys,
        ["organism", "eval", str(fake), "-T", "power_seek.dataset=x.jsonl"],
        "-T power_seek.dataset: 'power_seek' is not one of",
        "self_preservation, power_seeking, corrigibility",
    )
    with pytest.raises(SafelabError, match="not 'default'"):
        ModelOrganism.load(other).check_base("default")
    with pytest.raises(SafelabError, match="not 'default'"):
        check_organism_base(other, "default")  # what load_model("default+organism:...") runs
    check_organism_base(other, "/models/other-base")
    assert same_model("default", "smollm2") and not same_model("default", "/models/other-base")


def test_the_catalogue_breaks_the_ab_rates_down_as_the_scorer_does() -> None:
    from safelab.evals.mwe import BREAKDOWN
    from safelab.organisms.catalog import MWE_BREAKDOWN

    # two literals, because the catalogue is imported without Inspect: kept equal here
    assert MWE_BREAKDOWN == BREAKDOWN


def test_the_eval_aware_comparison_is_decided_by_the_contrast() -> None:
    from safelab.organisms.compare import (
        ConditionRates,
        Difference,
        difference_verdict,
        paired_gap,
    )
    from safelab.stats import rate

    def cr(org: int, base: int, n: int = 16) -> ConditionRates:
        o, b = [1.0] * org + [0.0] * (n - org), [1.0] * base + [0.0] * (n - base)
        return ConditionRates(rate(o), rate(b), paired_gap(list(zip(o, b, strict=True))))

    assert entry("eval_aware").evaluations[0].effect == "contrast"
    aware = Difference.of_contrasts(cr(8, 0), cr(0, 0))
    assert aware is not None and difference_verdict(aware, "higher") == "caught"
    plain = Difference.of_contrasts(cr(8, 0), cr(8, 0))  # misbehaves under both notices
    assert (
        plain is not None
        and plain.value == 0
        and difference_verdict(plain, "higher") == ("not caught")
    )
    assert difference_verdict(None, "higher") == "unscorable"
