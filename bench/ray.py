"""Benchmark: the same work sequentially and on a local Ray cluster, in one run.

1. **Probe sweep**, 30 sites x 3 seeds = 90 cells of :mod:`safelab.distributed` (one probe,
   its held-out metrics and its shuffled-label control per cell), on the default model's
   activations of ``--data`` (default: the cities statements of ``../shared/data``, captured once
   into the activation cache, outside the timing). Sequential: :func:`run_grid` in this process.
   Ray: the same cells as tasks on a local cluster of ``--workers`` CPUs (started before the
   timing; its start-up is reported apart). The two runs' results are compared for equality.
2. **Capture**, about ``--tokens`` tokens (default 200k) of ``blocks.15.resid_post`` at every
   position: :func:`capture_to_store` in this process vs :func:`capture_to_store_ray` with
   ``--workers`` actors, each loading the model itself (the actors' start-up and model load is
   inside the timing: it is what a user waits for). The stores are compared byte for byte.
3. **Fixed overhead**: a one-site sweep (one cell) on the already running cluster vs here, and
   the cluster's start-up time.

Ratios are sequential time / Ray time (above 1 means Ray is faster). The machine is shared:
the load average is recorded before and after each part.

Run::

    HF_HUB_OFFLINE=1 .venv/bin/python bench/ray.py [--tokens 200000] [--workers 2] [--skip-capture]

Last line: ``{"sweep_speedup", "capture_speedup", "ray_start_s", "tiny_sweep_overhead_s", ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# This file is named ray.py: its own folder goes to the end of the path, so `import ray` finds Ray.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE] + [str(_HERE)]

from _util import final_json, machine_note  # noqa: E402


def load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f},{b:.2f},{c:.2f}"


def sweep_cells(data_path: str, n_sites: int, seeds: list[int], resamples: int) -> list[Any]:
    import numpy as np

    from safelab.interp.actcache import cached_activations
    from safelab.interp.contrast import load_contrast
    from safelab.interp.splits import make_split
    from safelab.interp.sweep import ProbeCell, SiteFit
    from safelab.models.loading import load_model

    model = load_model("default")
    data = load_contrast(data_path, model)
    cached = cached_activations(model, data, "blocks.*.resid_post", progress=True)
    sites = list(cached.acts)[:n_sites]
    labels = tuple(int(v) for v in data.labels)
    cells = []
    for seed in seeds:
        train, test, info = make_split(data, test_frac=0.25, seed=seed)
        fit = SiteFit.of(
            data,
            method="logistic",
            c=1.0,
            seed=seed,
            n_resamples=resamples,
            model=model.name,
            test_frac=0.25,
        )
        for s in sites:
            cells.append(
                ProbeCell(
                    store=str(cached.store),
                    site=s,
                    labels=labels,
                    train=tuple(int(i) for i in np.asarray(train)),
                    test=tuple(int(i) for i in np.asarray(test)),
                    fit=fit,
                    split=json.dumps(info.to_dict()),
                )
            )
    del model
    return cells


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def bench_sweep(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from safelab.distributed import run_grid
    from safelab.interp.sweep import probe_cell

    cells = sweep_cells(args.data, args.sites, [0, 1, 2], args.resamples)
    print(f"sweep: {len(cells)} cells ({args.sites} sites x 3 seeds); load {load()}", flush=True)
    t_seq, seq = timed(lambda: run_grid(probe_cell, cells, tmp / "seq", progress=False))
    print(f"  sequential: {t_seq:.1f}s (load {load()})", flush=True)
    t_ray, par = timed(
        lambda: run_grid(probe_cell, cells, tmp / "ray", ray="local", progress=False)
    )
    print(f"  ray ({args.workers} workers): {t_ray:.1f}s (load {load()})", flush=True)
    one = cells[:1]
    t_one_seq, _ = timed(lambda: run_grid(probe_cell, one, tmp / "one-seq", progress=False))
    t_one_ray, _ = timed(
        lambda: run_grid(probe_cell, one, tmp / "one-ray", ray="local", progress=False)
    )
    print(f"  one cell: here {t_one_seq:.2f}s, on ray {t_one_ray:.2f}s", flush=True)
    return {
        "sweep_cells": len(cells),
        "sweep_resamples": args.resamples,
        "sweep_seq_s": round(t_seq, 2),
        "sweep_ray_s": round(t_ray, 2),
        "sweep_speedup": round(t_seq / t_ray, 3),
        "sweep_identical": seq == par,
        "tiny_sweep_seq_s": round(t_one_seq, 3),
        "tiny_sweep_ray_s": round(t_one_ray, 3),
        "tiny_sweep_overhead_s": round(t_one_ray - t_one_seq, 3),
    }


def bench_capture(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from safelab.interp.capture_ray import capture_to_store_ray
    from safelab.interp.store import capture_to_store
    from safelab.models.loading import load_model
    from safelab.sae.texts import build_passages, read_sentences

    model = load_model("default", dtype="float32")
    texts = build_passages(read_sentences(), model.tokenizer, args.tokens, per_text=128)
    site = "blocks.15.resid_post"
    kw: dict[str, Any] = {"batch_size": 8, "shard_rows": 16384, "dtype": "float16"}
    print(f"capture: {len(texts)} passages, ~{args.tokens} tokens; load {load()}", flush=True)
    t_seq, one = timed(
        lambda: capture_to_store(model, texts, site, tmp / "store-seq", progress=False, **kw)
    )
    print(f"  sequential: {t_seq:.1f}s, {len(one)} rows (load {load()})", flush=True)
    t_ray, two = timed(
        lambda: capture_to_store_ray(
            "default",
            texts,
            site,
            tmp / "store-ray",
            workers=args.workers,
            progress=True,
            **kw,
        )
    )
    print(f"  ray ({args.workers} actors): {t_ray:.1f}s (load {load()})", flush=True)
    names = sorted(p.name for p in (tmp / "store-seq").iterdir())
    same = names == sorted(p.name for p in (tmp / "store-ray").iterdir()) and all(
        (tmp / "store-seq" / n).read_bytes() == (tmp / "store-ray" / n).read_bytes() for n in names
    )
    return {
        "capture_tokens": len(one),
        "capture_seq_s": round(t_seq, 2),
        "capture_ray_s": round(t_ray, 2),
        "capture_speedup": round(t_seq / t_ray, 3),
        "capture_seq_tokens_per_s": round(len(one) / t_seq, 1),
        "capture_ray_tokens_per_s": round(len(two) / t_ray, 1),
        "capture_identical_bytes": same,
    }


def main() -> None:
    from safelab.data import shared_data_root

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(shared_data_root() / "truth/datasets/cities.csv"))
    p.add_argument("--sites", type=int, default=30)
    p.add_argument("--tokens", type=int, default=200_000)
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per metric")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip-capture", action="store_true")
    p.add_argument("--skip-sweep", action="store_true")
    args = p.parse_args()
    # The machine is shared: Ray's memory monitor counts every job's memory and kills these small
    # workers when the node is nearly full; the figures are about time, so it is turned off here.
    os.environ.setdefault("RAY_memory_monitor_refresh_ms", "0")
    import ray

    print(machine_note(), flush=True)
    result: dict[str, Any] = {"load_start": load()}
    t_start, _ = timed(
        lambda: ray.init(num_cpus=args.workers, include_dashboard=False, log_to_driver=False)
    )
    result["ray_start_s"] = round(t_start, 2)
    print(f"ray: local cluster of {args.workers} CPUs started in {t_start:.1f}s", flush=True)
    tmp = Path(tempfile.mkdtemp(prefix="safelab-bench-ray-"))
    try:
        if not args.skip_sweep:
            result.update(bench_sweep(args, tmp))
        if not args.skip_capture:
            result.update(bench_capture(args, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        ray.shutdown()
    result["load_end"] = load()
    result["machine"] = machine_note()
    final_json(result)


if __name__ == "__main__":
    main()
