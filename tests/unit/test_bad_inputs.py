"""A catalogue of ordinary mistakes: each one line naming the input and the fix, exit 2 on the CLI,
one line and a non-zero exit under ``inspect eval`` (Inspect's own prerequisite-error display).

Checks that need the model's shape run before any sample (and before the slow work: the model
load, a probe sweep); each case says what it catches.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from inspect_ai.model import get_model

from safelab.cli import main
from safelab.errors import SafelabError
from safelab.interp.probes import LinearProbe
from safelab.interp.steering import SteeringConfig, SteeringVector
from safelab.sae.formats import save_sae
from safelab.sae.sae import SparseAutoencoder

SITE = "blocks.1.resid_post"


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Artifacts made for a model of width 16 (the tiny model has 32), and files that are not
    what a command expects."""
    root = tmp_path_factory.mktemp("bad")
    g = torch.Generator().manual_seed(0)
    vec = SteeringVector(SteeringConfig(site=SITE, d_model=16), torch.randn(16, generator=g))
    vec.save(root / "vec16")
    x = torch.randn(8, 16, generator=g)
    LinearProbe.fit(x, [0, 1] * 4, SITE).save(root / "probe16")
    save_sae(SparseAutoencoder.random(16, 32, SITE), root / "sae16")
    (root / "notalog.txt").write_text("hello\n")
    (root / "x.json").write_text('{"a": 1}\n')
    (root / "data.csv").write_text("statement,label\nParis is in France.,1\nParis is in Peru.,0\n")
    return {
        p.name.split(".")[0] + ("json" if p.suffix == ".json" else ""): p for p in root.iterdir()
    } | {"root": root}


def _one_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    assert len(lines) == 1, text
    assert lines[0].startswith("safelab: error: "), text
    return lines[0]


CLI_CASES = [
    # (argv with {name} placeholders, fragment of the one line)
    (["audit", "summary", "{notalog}"], "is not a readable Inspect log"),
    (["audit", "view", "{xjson}", "--out", "{root}/v.html"], "is not a readable Inspect log"),
    (["eval", "--from-logs", "{xjson}"], "is not a readable Inspect log"),
    (["audit", "summary", "{root}/missing.eval"], "not found"),
    (
        ["capture", "--data", "{data}", "--sites", SITE, "--out", "{notalog}"],
        "is a file: give a folder",
    ),
    (["eval", "--model", "nosuch/provider", "--out", "{root}/e"], "no model provider 'nosuch'"),
    (["eval", "--model", "gpt-4o", "--out", "{root}/e"], "give <provider>/<model>"),
    (
        ["eval", "--model", "mockllm/model", "--judge", "nope/x", "--out", "{root}/e"],
        "--judge nope/x",
    ),
    # Checked before the model load (which takes ~20 s on the real model):
    (
        [
            "probe",
            "sweep",
            "--data",
            "{root}/missing.csv",
            "--out",
            "{root}/s",
            "--model",
            "{model}",
        ],
        "data file not found",
    ),
    (
        [
            "probe",
            "sweep",
            "--data",
            "{data}",
            "--sae",
            "{root}/nosae",
            "--out",
            "{root}/s",
            "--model",
            "{model}",
        ],
        "no SAE at",
    ),
]


@pytest.mark.parametrize(
    ("argv", "fragment"), CLI_CASES, ids=[" ".join(c[0][:2]) for c in CLI_CASES]
)
def test_cli_mistakes_are_one_line_and_exit_2(
    argv: list[str],
    fragment: str,
    files: dict[str, Path],
    tiny_folder: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import safelab.models.loading as loading

    def no_model_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("the mistake was found only after loading the model")

    monkeypatch.setattr(loading, "load_model", no_model_load)
    names = {k: str(v) for k, v in files.items()} | {"model": str(tiny_folder)}
    filled = [a.format(**names) if "{" in a else a for a in argv]
    assert main(filled) == 2
    assert fragment in _one_line(capsys.readouterr().err)


PROVIDER_CASES = [
    ({"bogus_arg": "1"}, "unknown model args for safelab/: bogus_arg"),
    ({"steer": "{root}/nope"}, "vector not found"),
    ({"probe": "{root}/nope"}, "not found"),
    ({"sae": "{root}/nope"}, "no SAE at"),
    ({"capture": "blocks.99.nope"}, "unknown site"),
    ({"capture": "blocks.9.resid_post"}, "blocks.9"),
    ({"steer": "{vec16}"}, "width 16 but"),
    ({"probe": "{probe16}"}, "width 16 but"),
    ({"sae": "{sae16}"}, "d_model 32 but the SAE reads 16"),
    ({"tool_descriptions": "short"}, "-M tool_descriptions='short'"),
    ({"context_window": "big"}, "-M context_window='big'"),
    ({"batch_size": "x"}, "-M batch_size='x'"),
]


@pytest.mark.parametrize(
    ("args", "fragment"),
    PROVIDER_CASES,
    ids=[next(iter(c[0])) + "=" + next(iter(c[0].values())) for c in PROVIDER_CASES],
)
def test_provider_mistakes_fail_at_start(
    args: dict[str, str], fragment: str, files: dict[str, Path], tiny_folder: Path
) -> None:
    from inspect_ai._util.error import PrerequisiteError

    names = {k: str(v) for k, v in files.items()}
    filled = {k: v.format(**names) for k, v in args.items()}
    with pytest.raises(SafelabError) as caught:
        get_model(f"safelab/{tiny_folder}", memoize=False, **filled)
    assert isinstance(caught.value, PrerequisiteError)  # Inspect prints it as one line
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        # the provider: a vector made for another width stops the eval before any sample
        (["safelab/over_refusal", "--model", "safelab/{model}", "-M", "steer={vec16}"], "width 16"),
        # a safelab task factory: a bad -T
        (["safelab/over_refusal", "--model", "mockllm/model", "-T", "label=odd"], "-T label=odd"),
    ],
    ids=["provider", "task"],
)
def test_inspect_eval_prints_one_line(
    argv: list[str], fragment: str, files: dict[str, Path], tiny_folder: Path, tmp_path: Path
) -> None:
    names = {k: str(v) for k, v in files.items()} | {"model": str(tiny_folder)}
    inspect = Path(sys.executable).with_name("inspect")
    cmd = [str(inspect), "eval", *[a.format(**names) for a in argv], "--limit", "1"]
    env = {**os.environ, "COLUMNS": "1000", "INSPECT_LOG_DIR": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode != 0
    assert fragment in _one_line(run.stdout), run.stdout + run.stderr
    assert "Traceback" not in run.stdout + run.stderr
