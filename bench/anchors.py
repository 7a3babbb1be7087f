"""Benchmark: thought-anchor rollouts from a shared prefix vs a plain loop of ``generate`` calls.

Both peers draw ``--rollouts`` continuations of the same prefix (a planted trace's full
reasoning in the default model's chat template), temperature 0.6, top-p 0.95, exactly
``--tokens`` new tokens each (``min_new_tokens`` is set for both, so both do the same work):

- ``shared_prefix``: :func:`safelab.models.generation.sample_continuations` computes the
  prefix's KV cache once, repeats it across the batch and samples all rollouts in one call;
- ``generate_loop``: one ``model.hf.generate`` call per rollout on the full prompt (the prefix
  recomputed every time), batch 1, the obvious way to write it.

Before timing, both run greedy and their tokens are compared (``greedy_identical``). Timing is
interleaved (order rotates), medians reported, with the load average.

Run::

    HF_HUB_OFFLINE=1 OMP_NUM_THREADS=1 nice -n 10 .venv/bin/python bench/anchors.py [--reps 3]

Last line: ``{"speedup": loop time / shared time, "rollouts_per_s": {...}, ...}``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import final_json, interleaved, machine_note, median, print_table, ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rollouts", type=int, default=20)
    ap.add_argument("--tokens", type=int, default=24)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()

    from safelab.anchors.planted import planted_traces
    from safelab.anchors.rollouts import prefix_text
    from safelab.models.generation import GenerationRequest, sample_continuations
    from safelab.models.loading import load_model

    model = load_model("default", dtype="float32")
    trace = planted_traces(1, 0, 5)[0]
    text = prefix_text(model, trace, len(trace.spans))
    ids = list(model.tokenizer(text, add_special_tokens=False)["input_ids"])
    print(
        f"prefix {len(ids)} tokens, {args.rollouts} rollouts x {args.tokens} tokens; {machine_note()}"
    )
    model.hf.generation_config.min_new_tokens = args.tokens
    pad = model.tokenizer.pad_token_id

    def loop(req: GenerationRequest) -> list[list[int]]:
        out = []
        x = torch.tensor([ids])
        if req.seed is not None:
            torch.manual_seed(req.seed)
        for _ in range(args.rollouts):
            kw: dict[str, object] = (
                {"do_sample": True, "temperature": req.temperature, "top_p": req.top_p}
                if req.temperature
                else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
            )
            with torch.inference_mode():
                seq = model.hf.generate(
                    input_ids=x,
                    attention_mask=torch.ones_like(x),
                    max_new_tokens=req.max_new_tokens,
                    pad_token_id=pad,
                    **kw,
                )
            out.append(seq[0, len(ids) :].tolist())
        return out

    def shared(req: GenerationRequest) -> list[list[int]]:
        return [r.completion_ids for r in sample_continuations(model, ids, args.rollouts, req)]

    greedy = GenerationRequest(max_new_tokens=args.tokens)
    full = args.rollouts
    args.rollouts = 2  # the exactness check: two greedy rollouts each way
    same = shared(greedy) == loop(greedy)
    args.rollouts = full
    print(f"greedy tokens identical: {same}", flush=True)
    sampled = GenerationRequest(max_new_tokens=args.tokens, temperature=0.6, top_p=0.95, seed=0)
    lengths: set[int] = set()

    def timed_shared() -> None:
        lengths.update(len(s) for s in shared(sampled))

    def timed_loop() -> None:
        lengths.update(len(s) for s in loop(sampled))

    times = interleaved({"shared_prefix": timed_shared, "generate_loop": timed_loop}, args.reps)
    print(f"rollout lengths (both peers, every rep): {sorted(lengths)}")
    print_table(times)
    rps = {k: round(args.rollouts / median(v), 3) for k, v in times.items()}
    print(f"rollouts/s: {rps}; {machine_note()}")
    final_json(
        {
            "speedup": ratio(times["generate_loop"], times["shared_prefix"]),
            "rollouts_per_s": rps,
            "greedy_identical": same,
            "prefix_tokens": len(ids),
            "rollouts": args.rollouts,
            "tokens": args.tokens,
            "reps": args.reps,
            "rollout_lengths": sorted(lengths),
        }
    )


if __name__ == "__main__":
    main()
