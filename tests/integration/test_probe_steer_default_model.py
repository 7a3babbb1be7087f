"""Probes, steering and monitors on the real default model and the shared data (a few minutes)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

TRUTH = Path("truth/datasets")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("probe_steer")


def _cli(*argv: str) -> None:
    from safelab.cli import main

    assert main([str(a) for a in argv]) == 0


@pytest.fixture(scope="module")
def probe_dir(shared_data: Path, workdir: Path) -> Path:
    # A CSV the code has never seen: animal_class rows re-written with extra columns.
    src = shared_data / TRUTH / "animal_class.csv"
    data = workdir / "unseen.csv"
    with src.open() as f, data.open("w", newline="") as g:
        w = csv.writer(g)
        w.writerow(["id", "statement", "label"])
        for i, row in enumerate(csv.DictReader(f)):
            w.writerow([i, row["statement"], row["label"]])
    out = workdir / "sweep"
    sites = "blocks.4.resid_post,blocks.10.resid_post,blocks.16.resid_post"
    _cli(
        "probe",
        "sweep",
        "--data",
        data,
        "--out",
        out,
        "--sites",
        sites,
        "--cache",
        workdir / "cache",
        "--resamples",
        "200",
        "--seed",
        "3",
    )
    return out


def test_probe_sweep_writes_metrics(probe_dir: Path) -> None:
    metrics = json.loads((probe_dir / "metrics.json").read_text())
    assert metrics["seed"] == 3 and metrics["best_site"] in metrics["sites"]
    assert set(metrics["sites"]) == {f"blocks.{i}.resid_post" for i in (4, 10, 16)}
    for site in metrics["sites"].values():
        lo, hi = site["auroc_ci"]
        assert lo <= site["auroc"] <= hi and 0 <= site["recall_at_1pct_fpr"] <= 1
    # Real structure: the best layer separates true from false animal classes.
    assert metrics["best_auroc"] > 0.7
    # animal_class is written as minimal pairs ("The frog is a bird." / "... a fish."): the split
    # groups them, and the controls sit next to the probe.
    split = metrics["split"]
    assert (
        split["grouped"] and split["how"] == "near_duplicates" and split["n_multi_row_groups"] > 20
    )
    assert set(metrics["baselines"]) == {"bag_of_words", "token_embedding"}
    for site in metrics["sites"].values():
        assert 0.0 <= site["control_auroc"] <= 1.0 and isinstance(site["flags"], list)
    assert isinstance(metrics["flags"], list)
    assert (probe_dir / "auroc_by_layer.png").stat().st_size > 1000
    assert (probe_dir / "probe" / "probe.safetensors").is_file()


def test_probe_refit_reuses_cached_activations(probe_dir: Path, workdir: Path) -> None:
    metrics = json.loads((probe_dir / "metrics.json").read_text())
    out = workdir / "mass_mean"
    _cli(
        "probe",
        "sweep",
        "--data",
        workdir / "unseen.csv",
        "--out",
        out,
        "--method",
        "mass_mean",
        "--sites",
        ",".join(metrics["sites"]),
        "--cache",
        workdir / "cache",
        "--resamples",
        "100",
    )
    again = json.loads((out / "metrics.json").read_text())
    assert again["timing"]["cached"] is True and again["timing"]["capture_s"] == 0
    assert again["activation_cache"] == metrics["activation_cache"]


@pytest.fixture(scope="module")
def steer_dir(shared_data: Path, workdir: Path) -> Path:
    out = workdir / "steer"
    data = shared_data / "caa/Datasets/generate/corrigible-neutral-HHH/generate_dataset.json"
    _cli(
        "steer",
        "sweep",
        "--data",
        data,
        "--out",
        out,
        "--limit",
        "16",
        "--test-limit",
        "6",
        "--sites",
        "blocks.12.resid_post",
        "--layers-sites",
        "blocks.12.resid_post",
        "--scales=-8,8",
        "--cache",
        workdir / "cache",
        "--resamples",
        "200",
    )
    return out


def test_steer_sweep_writes_metrics(steer_dir: Path) -> None:
    metrics = json.loads((steer_dir / "metrics.json").read_text())
    assert metrics["best_site"] == "blocks.12.resid_post" and metrics["best_scale"] in (-8.0, 8.0)
    cells = metrics["sites"]["blocks.12.resid_post"]
    assert set(cells) == {"-8", "8"}
    assert metrics["split"]["grouped"] and metrics["split"]["how"].startswith("pairs")
    for c in cells.values():
        assert c["delta_ci"][0] <= c["delta"] <= c["delta_ci"][1]
    assert (
        0 < metrics["baseline_p_match"] < 1 and metrics["n_test"] == 4
    )  # a quarter of the 16 pairs, held out
    assert (steer_dir / "vector" / "vector.safetensors").is_file()


def test_probe_and_vector_run_inside_inspect(probe_dir: Path, steer_dir: Path) -> None:
    from inspect_ai import Task, eval
    from inspect_ai.dataset import Sample
    from inspect_ai.solver import generate

    from safelab.monitors.probe_monitor import probe_monitor

    task = Task(
        dataset=[Sample(input="Is a salmon a fish? Answer in one sentence.")],
        solver=generate(),
        scorer=probe_monitor(name="probe", reduce="mean"),
    )
    (log,) = eval(
        task,
        model="safelab/default",
        model_args={
            "probe": str(probe_dir / "probe"),
            "steer": str(steer_dir / "vector"),
            "steer_scale": 2.0,
        },
        max_tokens=8,
        display="none",
        log_dir=str(probe_dir / "logs"),
    )
    assert log.status == "success", log.error
    sample = (log.samples or [])[0]
    meta = sample.output.metadata["safelab"]
    record = meta["probes"]["probe"]
    assert len(record["scores"]) == len(record["tokens"]) > 0
    assert meta["steer"]["scale"] == 2.0
    score = sample.scores["probe_monitor"]  # type: ignore[index]
    assert score.value == pytest.approx(record["mean"], abs=1e-4)
