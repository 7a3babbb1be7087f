"""Benchmark: ``safelab validate --preset quick`` cold, then warm (not a test; asserts nothing).

Cold: a fresh run folder and, unless ``--root`` names an existing organism cache, a fresh one
too, so every organism is trained once and every cell computed. Warm: the same command again,
which reuses every organism, eval and cell (the resume path). Each run is a subprocess of the
real CLI (``nice -n 10``, ``--threads 1`` unless ``--threads`` says otherwise), timed by
wall clock; the load average is printed next to the figures because the machine is shared.

Run::

    HF_HUB_OFFLINE=1 .venv/bin/python bench/validate.py [--root runs/organisms] [--organisms a,b]

Last line: ``{"cold_s": c, "warm_s": w, "cold_vs_warm": c / w, "organisms_trained": k, ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import final_json


def _load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f},{b:.2f},{c:.2f}"


def run(out: Path, root: Path, organisms: str | None, threads: int = 1) -> tuple[float, str]:
    cmd = ["nice", "-n", "10", str(Path(sys.executable).parent / "safelab"), "validate"]
    cmd += ["--preset", "quick", "--out", str(out), "--root", str(root)]
    cmd += ["--threads", str(threads)]
    if organisms:
        cmd += ["--organisms", organisms]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=os.environ | {"HF_HUB_OFFLINE": "1"}
    )
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n")
        raise SystemExit(f"safelab validate exited {proc.returncode}")
    return seconds, proc.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=None, help="organism cache (default: a fresh temp folder)")
    p.add_argument("--organisms", default=None, help="kinds (default: every kind known)")
    p.add_argument("--out", default=None, help="run folder (default: a fresh temp folder)")
    p.add_argument(
        "--threads", type=int, default=1,
        help="torch threads of the matrix (1 on a shared machine; the core count on a quiet one)",
    )  # fmt: skip
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root or Path(tmp) / "organisms")
        out = Path(args.out or Path(tmp) / "validate")
        before = {d.name for d in root.iterdir()} if root.is_dir() else set()
        load_start = _load()
        print(f"cold run (load {load_start}); organisms in {root}", flush=True)
        cold, _ = run(out, root, args.organisms, args.threads)
        # ru_maxrss of the largest child so far (KiB on Linux): the cold matrix process
        peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        cold_timings = json.loads((out / "metrics.json").read_text()).get("timings_s")
        trained = sorted({d.name for d in root.iterdir() if not d.name.startswith(".")} - before)
        reused = sorted(d for d in before if not d.startswith("."))
        print(
            f"  cold {cold:.0f} s, peak RSS {peak_gib:.1f} GiB, trained {len(trained)}: "
            f"{', '.join(trained)} (load {_load()})"
        )
        print(f"  organisms already in the cache (reused, not trained): {', '.join(reused)}")
        warm, text = run(out, root, args.organisms, args.threads)
        print(f"  warm {warm:.1f} s (load {_load()})")
        print(text)
        metrics = json.loads((out / "metrics.json").read_text())
        final_json(
            {
                "cold_s": round(cold, 1),
                "warm_s": round(warm, 1),
                "cold_vs_warm": round(cold / warm, 2),
                "cold_peak_rss_gib": round(peak_gib, 2),
                "cold_timings_s": cold_timings,
                "organisms_trained": len(trained),
                "organisms_reused": len(reused),
                "cold_includes": (
                    "a fresh run folder: every Inspect eval, probe capture, judge call and cell; "
                    + (
                        "organism training for the kinds not cached"
                        if trained
                        else "no organism training (every organism was already in the cache)"
                    )
                ),
                "loadavg_start": load_start,
                "cells": len(metrics["cells"]),
                "summary": metrics["summary"],
                "loadavg_end": _load(),
                "cpus": os.cpu_count(),
                "threads": args.threads,
            }
        )


if __name__ == "__main__":
    main()
