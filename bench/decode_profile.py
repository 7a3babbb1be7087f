"""Profile the continuous decode loop without Inspect: the 16 questions of ``generate.py``.

Prints the prefill time of the 16 prompts, the mean decode step at batch 16 and where a step's
time goes (cProfile self time: linear, attention, other torch ops, the Python of the modules,
safelab's own loop), then the whole decode's time per repetition. It runs whatever ``safelab``
is importable, so an older checkout can be compared in the same way, one process each, runs
interleaved::

    nice -n 10 .venv/bin/python bench/decode_profile.py --threads 1
    PYTHONPATH=/work/main/src nice -n 10 .venv/bin/python bench/decode_profile.py --threads 1

``--dtype bfloat16`` times the opt-in bfloat16 path and prints how many greedy completions equal
float32's (float32 runs once more for the reference). Not a test; asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import pstats
import time
from typing import Any

from generate import question_texts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()

    import torch

    import safelab
    from safelab.models.decode import DecodeBatch
    from safelab.models.generation import GenerationRequest, encode_prompts, generate_batch
    from safelab.models.kvcache import PrefixCache
    from safelab.models.loading import load_model

    torch.set_num_threads(args.threads)
    wb = load_model("default", dtype=args.dtype)
    texts = question_texts(wb)
    ids = encode_prompts(wb, texts, [True] * len(texts))
    req = GenerationRequest(max_new_tokens=args.max_tokens)

    def profiled(prof: cProfile.Profile) -> tuple[float, float, int]:
        batch = DecodeBatch(wb, PrefixCache(), wb.cache_scope())
        t0 = time.perf_counter()
        if hasattr(batch, "add_many"):
            batch.add_many(ids, [req] * len(ids))
        else:  # before group prefill: one prompt at a time
            for p in ids:
                batch.add(p, req)
        prefill_s = time.perf_counter() - t0
        t0, steps = time.perf_counter(), 0
        prof.enable()
        while len(batch):
            batch.step()
            steps += 1
        prof.disable()
        return prefill_s, time.perf_counter() - t0, steps

    profiled(cProfile.Profile())  # warm-up
    prof = cProfile.Profile()
    prefill_s, decode_s, steps = profiled(prof)
    parts: dict[str, float] = {}
    stats: Any = pstats.Stats(prof)
    for (path, _, name), (_, _, self_s, _, _) in stats.stats.items():
        if "_nn.linear" in name or "_linear_pointwise" in name:
            key = "linear"
        elif "scaled_dot_product" in name:
            key = "attention (sdpa)"
        elif "safelab/models/decode" in path:
            key = "safelab decode loop"
        elif path == "~" or "built-in" in path:
            key = "other torch ops"
        else:
            key = "python of the modules"
        parts[key] = parts.get(key, 0.0) + self_s
    total = sum(parts.values())
    print(f"safelab from {os.path.dirname(safelab.__file__)}, {args.dtype}, {args.threads} threads")
    print(f"prefill of {len(ids)} prompts {prefill_s:.2f} s; {steps} decode steps {decode_s:.2f} s")
    for key, value in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {key:<24} {1000 * value / steps:7.1f} ms/step {100 * value / total:5.1f}%")
    times, results = [], []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        results = generate_batch(wb, texts, req, cache=PrefixCache())
        times.append(round(time.perf_counter() - t0, 3))
    out: dict[str, Any] = {
        "prefill_s": round(prefill_s, 3),
        "step_ms": round(1000 * decode_s / steps, 1),
        "decode_s": times,
        "tokens": sum(len(r.completion_ids) for r in results),
        "loadavg": round(os.getloadavg()[0], 2),
    }
    if args.dtype != "float32":
        ref = load_model("default", dtype="float32")
        plain = generate_batch(ref, texts, req, cache=PrefixCache())
        same = sum(
            a.completion_ids == b.completion_ids for a, b in zip(plain, results, strict=True)
        )
        out["identical_to_float32"] = f"{same}/{len(texts)}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
