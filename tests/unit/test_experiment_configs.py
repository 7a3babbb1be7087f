"""Config -> run -> result: the CLI's options come from the config, which pickles and is saved."""

from __future__ import annotations

import argparse
import json
import pickle
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest

from safelab.commands.options import add_options, from_options
from safelab.interp.probe_sweep import GeneralisationConfig, ProbeSweepConfig
from safelab.interp.steer_run import SteerSweepConfig


def _parser(cls: type, **kw: object) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    add_options(p, cls, **kw)  # type: ignore[arg-type]
    return p


@pytest.mark.parametrize(
    ("cls", "argv", "given"),
    [
        (ProbeSweepConfig, ["--data", "x.csv"], {"data": "x.csv"}),
        (GeneralisationConfig, ["--data", "a.csv", "b.csv"], {"data": ("a.csv", "b.csv")}),
        (SteerSweepConfig, ["--data", "p.json"], {"data": "p.json"}),
    ],
)
def test_cli_defaults_are_the_configs_own(cls, argv, given) -> None:  # type: ignore[no-untyped-def]
    cfg = from_options(cls, _parser(cls, required=("data",)).parse_args(argv))
    assert cfg == cls(**given)  # nothing but what was typed differs from the config's defaults
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # Ray ships configs by pickling them
    with pytest.raises(FrozenInstanceError):
        cfg.seed = 1  # type: ignore[misc]


def test_options_follow_the_field_types() -> None:
    p = _parser(ProbeSweepConfig, required=("data",))
    cfg = from_options(
        ProbeSweepConfig,
        p.parse_args(["--data", "d", "--no-controls", "--limit", "7", "--c", "0.5"]),
    )
    assert (cfg.controls, cfg.limit, cfg.c) == (False, 7, 0.5)
    with pytest.raises(SystemExit):
        p.parse_args(["--data", "d", "--method", "svm"])  # choices come from the field
    with pytest.raises(TypeError, match="no field"):
        _parser(ProbeSweepConfig, defaults={"not_a_field": 1})


def test_generalise_command_writes_its_config(tiny_folder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from safelab import cli

    rows = [f"Statement {i} about topic {i % 3}.,{i % 2},d{i % 3}" for i in range(48)]
    data = tmp_path / "d.csv"
    data.write_text("statement,label,dom\n" + "\n".join(rows) + "\n")
    out = tmp_path / "gen"
    argv = ["probe", "generalise", "--data", str(data), "--domain", "dom", "--out", str(out)]
    argv += ["--model", str(tiny_folder), "--cache", str(tmp_path / "c"), "--resamples", "20"]
    argv += ["--site", "blocks.1.resid_post", "--group", "rows"]
    assert cli.main(argv) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["config"]["domain"] == "dom" and m["config"]["data"] == [str(data)]
    assert (
        m["names"] == ["d0", "d1", "d2"]
        and len(m["auroc"]) == 3
        and m["site"] == "blocks.1.resid_post"
    )


def test_sae_train_run_captures_trains_and_evaluates(tiny_folder, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from safelab.sae.formats import load_sae
    from safelab.sae.run import SAERunConfig, run_sae_train

    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(f"text number {i} says " + "word " * (i % 7) for i in range(60)))
    cfg = SAERunConfig(
        site="blocks.1.resid_post",
        model=str(tiny_folder),
        expansion=2,
        k=4,
        tokens=640,
        batch_size=64,
        data=str(texts),
        checkpoint_every=4,
    )
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    res = run_sae_train(cfg, tmp_path / "sae", progress=False)
    assert res.store == tmp_path / "sae" / "store" and res.metrics
    again = load_sae(tmp_path / "sae")
    assert again.d_sae == 64 and again.cfg.metrics == res.metrics
