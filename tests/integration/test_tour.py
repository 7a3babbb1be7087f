"""``safelab tour`` (the foundation tour) on a small slice of the real data."""

import json
from pathlib import Path

import pytest

from safelab.cli import main

pytestmark = pytest.mark.integration


def test_tour_writes_metrics_probe_and_log(tmp_path: Path, shared_data: Path) -> None:
    data = shared_data / "truth/datasets/cities.csv"
    assert main(["tour", "--out", str(tmp_path), "--data", str(data), "--n", "80"]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["n_statements"] == 80 and metrics["seed"] == 0
    best = metrics["probe"]["sites"][metrics["probe"]["best_site"]]
    lo, hi = best["auroc_ci"]
    assert 0.0 <= lo <= best["auroc"] <= hi <= 1.0
    assert Path(metrics["probe"]["path"]).is_file()
    assert Path(metrics["inspect_log"]).is_file()
    assert metrics["chat"]["answer"].strip()
