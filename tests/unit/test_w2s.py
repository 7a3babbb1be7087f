"""Weak-to-strong: losses, PGR, tasks and splits, the resumable run on a tiny model, the CLI."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from safelab.cli import main
from safelab.errors import SafelabError
from safelab.w2s.losses import LossConfig, aux_confidence, aux_weight, harden, xent
from safelab.w2s.pgr import performance_gap_recovered, pgr_value, seed_interval
from safelab.w2s.student import StudentConfig, train_head
from safelab.w2s.tasks import (
    BinaryTask,
    cap_rows,
    load_hub_task,
    load_labelled_file,
    load_task,
    split_task,
)
from safelab.w2s.weak import bow_probs, parse_weak

# -- losses ----------------------------------------------------------------------------------


def test_aux_loss_is_plain_cross_entropy_at_a_zero() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(64, generator=gen) * 3
    weak = torch.rand(64, generator=gen)
    assert torch.allclose(aux_confidence(logits, weak, 0.0), xent(logits, weak))
    # ... and differs once a > 0 when the student disagrees with its weak labels.
    assert not torch.allclose(aux_confidence(logits, weak, 0.5), xent(logits, weak))
    # The schedule: 0 at the start, linear through the warm-up, then flat at aux_coef.
    assert aux_weight(0.0, 0.5, 0.2) == 0.0
    assert aux_weight(0.1, 0.5, 0.2) == pytest.approx(0.25)
    assert aux_weight(0.9, 0.5, 0.2) == 0.5
    assert LossConfig("aux")(logits, weak, 0.0).item() == pytest.approx(xent(logits, weak).item())


def test_hardening_matches_the_weak_labels_class_balance() -> None:
    probs = torch.linspace(0.6, 0.99, 50)  # every probability above 0.5
    for share in (0.2, 0.5, 0.7):
        hard = harden(probs, share)
        assert hard.sum().item() == round(share * 50)
        # The top-share items are the ones hardened to 1.
        assert hard[-1] == 1 and (hard[: 50 - round(share * 50)] == 0).all()
    # The weak labels' balance picks the threshold inside aux_confidence, not 0.5.
    logits = torch.logit(probs)
    weak = torch.tensor([1.0] * 10 + [0.0] * 40)
    target_share = harden(torch.sigmoid(logits), float(weak.mean())).mean().item()
    assert target_share == pytest.approx(0.2)
    with pytest.raises(SafelabError):
        harden(probs, 1.5)


def test_unknown_loss_is_a_user_error() -> None:
    with pytest.raises(SafelabError, match="unknown loss"):
        LossConfig("mse")


# -- PGR -------------------------------------------------------------------------------------


def test_pgr_value_and_undefined_case() -> None:
    assert pgr_value(0.6, 0.8, 1.0) == pytest.approx(0.5)
    assert pgr_value(0.6, 0.5, 1.0) == pytest.approx(-0.25)
    assert pgr_value(0.8, 0.9, 0.8) is None
    assert pgr_value(0.9, 0.9, 0.7) is None


def test_pgr_interval_over_items_and_seeds() -> None:
    rng = np.random.default_rng(0)
    n = 400
    weak = (rng.random(n) < 0.6).astype(int)
    ceiling = (rng.random((3, n)) < 0.9).astype(int)
    student = (rng.random((3, n)) < 0.75).astype(int)
    p = performance_gap_recovered(weak, student, ceiling, n_resamples=500)
    expected = (student.mean() - weak.mean()) / (ceiling.mean() - weak.mean())
    assert p.defined and p.value == pytest.approx(expected)
    assert p.over == "seeds+items" and p.ci is not None
    assert p.value is not None and p.ci[0] < p.value < p.ci[1] and p.ci[1] - p.ci[0] < 0.6
    one = performance_gap_recovered(weak, student[0], ceiling[0], n_resamples=500)
    assert one.over == "items" and one.ci is not None
    s = seed_interval(
        [performance_gap_recovered(weak, student[i], ceiling[i], n_resamples=50) for i in range(3)]
    )
    assert s["mean"] is not None and s["ci"][0] <= s["mean"] <= s["ci"][1]


def test_pgr_undefined_when_ceiling_not_above_weak_is_reported_not_nan() -> None:
    weak = np.ones(50, dtype=int)
    student = np.ones(50, dtype=int)
    ceiling = np.r_[np.ones(40), np.zeros(10)].astype(int)
    p = performance_gap_recovered(weak, student, ceiling, n_resamples=100)
    assert p.value is None and not p.defined and "no gap" in p.reason
    d = p.to_dict()
    assert d["defined"] is False and json.dumps(d)  # serialisable, no NaN
    assert "undefined" in str(p)
    # A barely-positive gap: many resamples lose it, so the interval is withheld with a reason.
    weak = np.r_[np.ones(45), np.zeros(5)].astype(int)
    ceiling = np.r_[np.ones(46), np.zeros(4)].astype(int)
    p = performance_gap_recovered(weak, ceiling, ceiling, n_resamples=200)
    assert p.defined and p.ci is None and "withheld" in p.reason
    assert "withheld" in str(p)
    assert seed_interval([p, performance_gap_recovered(weak, weak, weak)])["mean"] is None


# -- tasks and splits ------------------------------------------------------------------------


def _synthetic_rows(n: int = 240, seed: int = 0) -> list[tuple[str, int]]:
    rnd = random.Random(seed)
    rows = []
    for i in range(n):
        y = rnd.randint(0, 1)
        word = rnd.choice(["good", "fine", "great"] if y else ["bad", "poor", "awful"])
        rows.append((f"the {word} fox number {i} jumps", y))
    return rows


def _write_csv(path: Path, rows: list[tuple[str, int]], header: str = "text,label") -> Path:
    path.write_text(header + "\n" + "".join(f"{t},{y}\n" for t, y in rows))
    return path


def test_splits_are_disjoint_stratified_and_fixed() -> None:
    rows = _synthetic_rows(300)
    task = BinaryTask("syn", [t for t, _ in rows], [y for _, y in rows], "test")
    s = split_task(task)
    parts = [set(s.weak_train), set(s.strong_train), set(s.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert set().union(*parts) == set(range(300))
    assert split_task(task) == s  # fixed: the same every time
    y = np.asarray(task.labels)
    for idx in (s.weak_train, s.strong_train, s.test):
        assert abs(y[idx].mean() - y.mean()) < 0.05
    assert s.sizes() == {"weak_train": 105, "strong_train": 105, "test": 90}
    assert "weak-train 105" in s.describe(task)
    capped = cap_rows(task, 100)
    assert len(capped) == 100 and capped.meta["rows_before_cap"] == 300


def test_grouped_splits_keep_each_group_in_one_part(tmp_path: Path) -> None:
    # True/false twins about one city: a group each, as truth-cities has.
    lines = ["statement,label,city"]
    for i in range(150):
        lines += [f"The city of C{i} is in A{i}.,1,C{i}", f"The city of C{i} is in B{i}.,0,C{i}"]
    path = tmp_path / "cities.csv"
    path.write_text("\n".join(lines) + "\n")
    task = load_labelled_file(path, group="city")
    assert task.groups is not None and task.groups[:2] == ["C0", "C0"]
    s = split_task(task)
    where: dict[str, int] = {}
    for part, idx in enumerate((s.weak_train, s.strong_train, s.test)):
        for i in idx:
            assert where.setdefault(task.groups[i], part) == part  # a group never straddles
    assert sorted(s.weak_train + s.strong_train + s.test) == list(range(300))
    assert abs(len(s.test) - 90) <= 2
    capped = cap_rows(task, 100)
    assert len(capped) == 100 and capped.groups is not None
    assert all(capped.groups.count(g) == 2 for g in capped.groups)


def test_task_file_loaders_and_bad_input(tmp_path: Path) -> None:
    rows = _synthetic_rows(40)
    task = load_labelled_file(_write_csv(tmp_path / "a.csv", rows))
    assert len(task) == 40 and task.labels == [y for _, y in rows]
    jsonl = tmp_path / "b.jsonl"
    jsonl.write_text("".join(json.dumps({"text": t, "label": bool(y)}) + "\n" for t, y in rows))
    assert load_task(str(jsonl)).labels == task.labels
    with pytest.raises(SafelabError, match="text,label"):
        load_labelled_file(_write_csv(tmp_path / "c.csv", rows, header="text,score"))
    no_labels = tmp_path / "d.csv"
    no_labels.write_text("text\nhello\nworld\n")
    with pytest.raises(SafelabError, match="needs the columns"):
        load_labelled_file(no_labels)
    one_class = [(t, 1) for t, _ in rows]
    with pytest.raises(SafelabError, match="both classes"):
        load_labelled_file(_write_csv(tmp_path / "e.csv", one_class))
    with pytest.raises(SafelabError, match="not 0/1"):
        load_labelled_file(_write_csv(tmp_path / "f.csv", [("x", 1), ("y", 7)]))  # type: ignore[list-item]
    with pytest.raises(SafelabError, match="unknown task"):
        load_task("no-such-task")


def test_hub_tasks_name_the_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(SafelabError, match="pip install datasets"):
        load_hub_task("sciq")
    with pytest.raises(SafelabError, match="unknown hub task"):
        load_hub_task("squad")


def test_bow_supervisor_learns_words() -> None:
    rows = _synthetic_rows(200)
    texts, labels = [t for t, _ in rows], [y for _, y in rows]
    p = bow_probs(texts, labels, list(range(100)))
    acc = ((p[100:] > 0.5) == np.asarray(labels[100:])).mean()
    assert acc > 0.95
    assert parse_weak("probe").site == "blocks.1.resid_post"
    with pytest.raises(SafelabError, match="unknown weak"):
        parse_weak("gpt2")


def test_student_head_learns_separable_features() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(200, 8, generator=gen)
    y = (x[:, 0] > 0).float().numpy()
    head = train_head(x, y, LossConfig("xent"), StudentConfig(epochs=20, lr=1e-2), seed=0)
    assert ((head.probs(x) > 0.5) == y).mean() > 0.95
    with pytest.raises(SafelabError, match="probabilities"):
        train_head(x, y * 2, LossConfig("xent"), StudentConfig(), seed=0)


# -- the run, resume, the CLI and the report -------------------------------------------------


def _cfg(task: Path, tmp_path: Path, **kw: object) -> Any:
    from safelab.w2s.run import W2SConfig

    base: dict[str, object] = dict(
        tasks=[str(task)],
        seeds=[0, 1],
        site="blocks.0.resid_post",
        position="mean",
        cache=str(tmp_path / "cache"),
        n_resamples=100,
        student_cfg=StudentConfig(epochs=10, lr=1e-2),
    )
    base.update(kw)
    return W2SConfig(**base)  # type: ignore[arg-type]


def test_run_writes_metrics_and_resumes_without_repeating_cells(tmp_path: Path) -> None:
    from safelab.w2s.run import run_experiment
    from tests.tiny import tiny_model

    task = _write_csv(tmp_path / "syn.csv", _synthetic_rows(240))
    model = tiny_model()
    cfg = _cfg(task, tmp_path)
    first = run_experiment(cfg, tmp_path / "out", model=model, progress=False, log=lambda s: None)  # type: ignore[arg-type]
    assert (first.computed, first.reused) == (4, 0)
    t = first.metrics["tasks"]["syn"]
    assert t["split_sizes"] == {"weak_train": 84, "strong_train": 84, "test": 72}
    assert set(t["losses"]) == {"xent", "aux"}
    for r in t["losses"].values():
        assert r["seeds"] == [0, 1] and len(r["student_accuracy"]) == 2
        pgr = r["pgr"]
        assert pgr["defined"] == (pgr["value"] is not None)
        assert pgr["value"] is not None or pgr["reason"]
    # Every number is finite JSON: no NaN anywhere.
    text = (tmp_path / "out" / "metrics.json").read_text()
    assert "NaN" not in text and "Infinity" not in text
    cells = sorted((tmp_path / "out" / "cells" / "syn").glob("*.json"))
    assert [c.name for c in cells] == [
        "aux-seed0.json",
        "aux-seed1.json",
        "xent-seed0.json",
        "xent-seed1.json",
    ]
    stamps = [c.stat().st_mtime_ns for c in cells]
    # Delete one cell: the rerun computes only that one and reuses the rest.
    cells[0].unlink()
    second = run_experiment(cfg, tmp_path / "out", model=model, progress=False, log=lambda s: None)  # type: ignore[arg-type]
    assert (second.computed, second.reused) == (1, 3)
    assert [c.stat().st_mtime_ns for c in cells[1:]] == stamps[1:]
    third = run_experiment(cfg, tmp_path / "out", model=model, progress=False, log=lambda s: None)  # type: ignore[arg-type]
    assert (third.computed, third.reused) == (0, 4)
    assert third.metrics["tasks"] == second.metrics["tasks"]
    # Another config in the same folder is refused, not mixed in.
    other = _cfg(task, tmp_path, aux_coef=0.75)
    with pytest.raises(SafelabError, match="another config"):
        run_experiment(other, tmp_path / "out", model=model, progress=False, log=lambda s: None)  # type: ignore[arg-type]


def test_lora_student_runs_and_leaves_the_model_unchanged(tmp_path: Path) -> None:
    from safelab.w2s.lora import LoraStudentConfig
    from safelab.w2s.run import run_experiment
    from tests.tiny import tiny_model

    task = _write_csv(tmp_path / "syn.csv", _synthetic_rows(120))
    model = tiny_model()
    before = {k: v.clone() for k, v in model.hf.state_dict().items()}
    lora = LoraStudentConfig(epochs=1, batch_size=32, target_modules=["q_proj", "v_proj"])
    cfg = _cfg(task, tmp_path, seeds=[0], losses=["aux"], lora=True, lora_cfg=lora)
    out = run_experiment(cfg, tmp_path / "out", model=model, progress=False, log=lambda s: None)
    cell = out.metrics["tasks"]["syn"]["losses"]["aux"]["cells"][0]
    assert cell["student_kind"] == "lora"
    assert 0.0 <= cell["models"]["student"]["accuracy"] <= 1.0
    after = model.hf.state_dict()
    assert set(after) == set(before)  # the adapters are gone again
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_weak_at_chance_is_a_flagged_row(tmp_path: Path) -> None:
    from safelab.w2s.run import FLAG_WEAK_AT_CHANCE, run_experiment
    from tests.tiny import tiny_model

    rnd = random.Random(1)
    # Labels carry no word the bag of words could use: the supervisor is at chance.
    rows = [(f"item {i} here", rnd.randint(0, 1)) for i in range(240)]
    task = _write_csv(tmp_path / "noise.csv", rows)
    cfg = _cfg(task, tmp_path, seeds=[0], losses=["xent"])
    out = run_experiment(
        cfg, tmp_path / "out", model=tiny_model(), progress=False, log=lambda s: None
    )  # type: ignore[arg-type]
    assert FLAG_WEAK_AT_CHANCE in out.metrics["tasks"]["noise"]["flags"]


def test_cli_runs_resumes_and_report_renders_in_chromium(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    from safelab.models import loading
    from tests.browser import dump_dom, with_image_probe
    from tests.tiny import tiny_model

    monkeypatch.setattr(loading, "load_model", lambda *a, **k: tiny_model())
    task = _write_csv(tmp_path / "syn.csv", _synthetic_rows(240))
    noise = _write_csv(tmp_path / "noise.csv", [(f"item {i} <b>x</b>", i % 2) for i in range(240)])
    out = tmp_path / "run"
    argv = ["w2s", "--task", f"{task},{noise}", "--weak", "bow", "--site", "blocks.0.resid_post",
            "--seeds", "0,1", "--resamples", "100", "--cache", str(tmp_path / "cache"), "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "weak-train" in printed and "PGR" in printed and "8 computed, 0 reused" in printed
    assert main(argv) == 0
    assert "0 computed, 8 reused" in capsys.readouterr().out
    assert main(["w2s", "--task", str(task), "--loss", "mse", "--out", str(out)]) == 2
    assert "unknown loss" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("text\nonly text\n")
    assert main(["w2s", "--task", str(bad), "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "text,label" in err
    report = out / "report.html"
    report.unlink()
    assert main(["w2s", "--out", str(out), "--report-only"]) == 0
    page = report.read_text()
    assert page.count("data:image/png;base64,") == 1 and "<table id='pgr'>" in page
    assert "<b>x</b>" not in page
    dom = dump_dom(with_image_probe(report, tmp_path / "probe.html"), tmp_path / "profile")
    assert 'data-decoded="1"' in dom, "the browser did not decode the PGR plot"
    table = re.search(r'<table id="pgr">(.*?)</table>', dom, re.S)
    assert (
        table is not None and table.group(1).count("<tr>") == 1 + 4
    )  # header + 2 tasks x 2 losses
    assert "weak_at_chance" in table.group(1)
