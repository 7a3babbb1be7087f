"""Shared helpers for the benchmark scripts: interleaved timing, medians, the final JSON line.

Benchmarks are not tests: they assert nothing about time. Each script prints its figures and
ends with one JSON object on its last line.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any


def interleaved(
    peers: Mapping[str, Callable[[], Any]], reps: int, *, verbose: bool = True
) -> dict[str, list[float]]:
    """Time each peer ``reps`` times, rotating the order every repetition.

    Rotation spreads slow phases of a shared, noisy machine over all peers instead of one. The
    caller runs a warm-up of every peer first.

    Returns:
        ``{peer: [seconds per repetition]}``.
    """
    names = list(peers)
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(reps):
        k = r % len(names)
        order = names[k:] + names[:k]
        if r % 2:
            order.reverse()
        for name in order:
            t0 = time.perf_counter()
            peers[name]()
            times[name].append(time.perf_counter() - t0)
        if verbose:
            row = "  ".join(f"{n}={times[n][-1]:.3f}s" for n in names)
            print(f"  rep {r + 1}/{reps}: {row}", flush=True)
    return times


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def ratio(peer: list[float], ours: list[float]) -> float:
    """Peer time / safelab time, from the medians (> 1 means safelab is faster)."""
    return round(median(peer) / median(ours), 3)


def print_table(times: Mapping[str, list[float]]) -> None:
    print(f"{'peer':<28} {'median s':>9} {'min s':>8} {'max s':>8}  n")
    for name, xs in times.items():
        print(f"{name:<28} {median(xs):>9.4f} {min(xs):>8.4f} {max(xs):>8.4f}  {len(xs)}")


def machine_note() -> str:
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return (
        f"cpus={os.cpu_count()} torch_threads={torch.get_num_threads()} "
        f"loadavg={load[0]:.2f},{load[1]:.2f},{load[2]:.2f} (shared machine: expect noise)"
    )


def final_json(result: Mapping[str, Any]) -> None:
    """The last line of every benchmark's output."""
    sys.stdout.flush()
    print(json.dumps(dict(result)), flush=True)
