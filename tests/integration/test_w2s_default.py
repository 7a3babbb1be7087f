"""``safelab w2s`` on the default model and real data: a small slice, one seed, both losses."""

import json
from pathlib import Path

import pytest

from safelab.cli import main

pytestmark = pytest.mark.integration


def test_w2s_cities_on_the_default_model(tmp_path: Path, shared_data: Path) -> None:
    out = tmp_path / "w2s"
    argv = ["w2s", "--task", "truth-cities", "--weak", "bow", "--loss", "xent,aux",
            "--seeds", "0", "--max-rows", "200", "--resamples", "200",
            "--data-root", str(shared_data), "--cache", str(tmp_path / "cache"), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    task = metrics["tasks"]["truth-cities"]
    assert task["rows"] == 200 and sum(task["split_sizes"].values()) == 200
    assert task["site"] == "blocks.21.resid_post"
    # The strong model's ceiling beats a bag of words on city facts by a wide margin.
    ceiling = task["losses"]["xent"]["ceiling_accuracy"][0]
    assert ceiling >= 0.7 and ceiling > task["weak"]["accuracy"] + 0.15
    for loss in ("xent", "aux"):
        pgr = task["losses"][loss]["pgr"]
        assert pgr["defined"], pgr["reason"]
        if pgr["ci"] is not None:
            assert pgr["ci"][0] <= pgr["value"] <= pgr["ci"][1]
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_every_builtin_task_loads_from_shared_data(shared_data: Path) -> None:
    from safelab.w2s.tasks import BUILTIN_TASKS, load_task, split_task

    for name in BUILTIN_TASKS:
        task = load_task(name, shared_data)
        assert len(task) >= 300 and 0.3 < sum(task.labels) / len(task) < 0.7, name
        split_task(task)  # disjoint parts with both classes, or a SafelabError
    lie = load_task("lie-detector", shared_data)
    # True and false twins share the stem and differ only in the answer.
    true, false = (t.split() for t in lie.texts[:2])
    assert true[:-1] == false[: len(true) - 1] and true != false
    assert lie.groups is not None and lie.groups[0] == lie.groups[1]
