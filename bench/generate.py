"""Benchmark: a 16-sample Inspect eval through ``safelab/default`` vs Inspect's own ``hf/`` provider.

Three evals of the same inline task (16 short questions, greedy, ``max_tokens=32``), all on the
same weights (the cached dequantised folder of the default model), float32, CPU:

- ``safelab``: ``safelab/default`` with ``batch_size=16``;
- ``inspect_hf``: ``hf/<folder>`` with ``do_sample=False`` and ``batch_size=16``;
- ``safelab_steered``: ``safelab/default`` with ``steer=<vector> steer_scale=<x>``, a vector made
  here by ``SteeringVector.from_contrast`` on a few activations and saved to a temp folder.

Every eval runs with ``max_connections=16`` (the hf provider's batch size is
``max_connections``), so both providers generate the 16 samples as one batch. Each model is created
once with ``get_model`` before timing and the same instance is passed to every eval, so loading is
excluded; a warm-up eval of each is run and discarded, then the three evals are timed interleaved
(order rotates) and medians are reported. Timing is the wall clock of ``inspect_ai.eval(...)``
(``display="none"``, logs in a temp dir), so it includes Inspect's own per-eval work (task setup,
log writing) for every peer alike.

Output tokens are counted from the logs: ``usage.output_tokens`` per sample, and the completions
re-tokenised with the model's tokenizer (the hf provider reports the padded batch length as every
sample's ``output_tokens``, so the re-tokenised count is the one used for tokens/s).

Offline trap: Inspect's default ``count_text_tokens`` downloads tiktoken's o200k_base. The hf
provider does not override it; a plain generate task does not call it, but to be safe it is
patched here to count with the model's tokenizer, and the number of calls is printed.

Run::

    HF_HUB_OFFLINE=1 .venv/bin/python bench/generate.py [--reps 5]

Last line: ``{"eval_vs_inspect_hf": r1, "steered_vs_plain": r2, "tokens_per_s": t}``; r1 is
hf time / safelab time, r2 is plain safelab time / steered time, t is safelab output tokens per
second of eval wall clock.
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from _util import final_json, interleaved, machine_note, median, print_table, ratio

QUESTIONS = [
    ("What is the capital of France?", "Paris"),
    ("How many legs does a spider have?", "eight"),
    ("What colour is the sky on a clear day?", "blue"),
    ("What is 7 times 6?", "42"),
    ("Which planet is known as the Red Planet?", "Mars"),
    ("What is the boiling point of water in Celsius at sea level?", "100"),
    ("Who wrote the play Romeo and Juliet?", "Shakespeare"),
    ("What gas do plants absorb from the air?", "carbon dioxide"),
    ("What is the largest ocean on Earth?", "Pacific"),
    ("How many days are there in a week?", "seven"),
    ("What is the opposite of hot?", "cold"),
    ("Which animal is known as the king of the jungle?", "lion"),
    ("What is the chemical symbol for gold?", "Au"),
    ("In which continent is Kenya?", "Africa"),
    ("What do bees make?", "honey"),
    ("How many minutes are in an hour?", "60"),
]

POSITIVE = [
    "I love this, it is wonderful and makes me so happy.",
    "What a fantastic day, everything is going great!",
    "This is the best gift I have ever received, thank you!",
    "I am delighted and grateful for all your help.",
]
NEGATIVE = [
    "I hate this, it is awful and makes me so angry.",
    "What a terrible day, everything is going wrong!",
    "This is the worst gift I have ever received, go away!",
    "I am furious and disgusted by all your mistakes.",
]


def bench_task() -> Any:
    from inspect_ai import Task
    from inspect_ai.dataset import Sample
    from inspect_ai.scorer import includes
    from inspect_ai.solver import generate

    return Task(
        dataset=[Sample(input=q, target=a, id=i) for i, (q, a) in enumerate(QUESTIONS)],
        solver=generate(),
        scorer=includes(),
        name="bench_generate",
    )


def patch_token_counting(tokenizer: Any, calls: list[int]) -> None:
    """Make the hf provider count tokens with the tokenizer instead of downloading tiktoken."""
    from inspect_ai.model._providers.hf import HuggingFaceAPI

    async def count_text_tokens(self: Any, text: str) -> int:
        calls.append(1)
        return max(1, len(tokenizer(text, add_special_tokens=False)["input_ids"]))

    HuggingFaceAPI.count_text_tokens = count_text_tokens  # type: ignore[method-assign]


def record_batch_sizes(sizes: list[int]) -> None:
    """Record how many samples each provider's generate call actually batched together."""
    import inspect_ai.model._providers.hf as hf_provider

    import safelab.provider.batcher as safelab_api

    safelab_generate = safelab_api.generate_batch
    hf_generate = hf_provider._generate_batch

    def safelab_wrapper(model: Any, texts: Any, *a: Any, **k: Any) -> Any:
        sizes.append(len(texts))
        return safelab_generate(model, texts, *a, **k)

    def hf_wrapper(batch: Any) -> Any:
        sizes.append(len(batch))
        return hf_generate(batch)

    safelab_api.generate_batch = safelab_wrapper  # type: ignore[assignment]
    hf_provider._generate_batch = hf_wrapper


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=5, help="timed repetitions per eval (median)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--steer-scale", type=float, default=4.0)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)

    from inspect_ai import eval as inspect_eval
    from inspect_ai.log import read_eval_log
    from inspect_ai.model import get_model

    from safelab.interp.steering import SteeringVector
    from safelab.models.loading import default_gguf_path, dequantised_folder, load_model

    folder = str(dequantised_folder(default_gguf_path()))
    batch = len(QUESTIONS)
    print(f"model folder: {folder}")
    print(f"{batch} samples, greedy, max_tokens={args.max_tokens}, batch {batch}, float32, CPU")
    print(machine_note())

    # A steering vector from a few activations (mean difference, last token).
    wb = load_model("default", dtype="float32", device="cpu")
    site = "blocks.15.resid_post"
    pos = wb.capture(POSITIVE, site, position="last")[site]
    neg = wb.capture(NEGATIVE, site, position="last")[site]
    vector = SteeringVector.from_contrast(pos, neg, site, model=wb.name, scale=args.steer_scale)
    token_calls: list[int] = []
    patch_token_counting(wb.tokenizer, token_calls)
    sizes: list[int] = []
    record_batch_sizes(sizes)

    with tempfile.TemporaryDirectory(prefix="safelab-bench-gen-") as tmp:
        vec_dir = Path(tmp) / "vector"
        vector.save(vec_dir)
        print(f"steering vector: {vector} saved to {vec_dir}, scale {args.steer_scale}")
        models = {
            "safelab": get_model("safelab/default", batch_size=batch),
            "inspect_hf": get_model(f"hf/{folder}", do_sample=False, batch_size=batch),
            "safelab_steered": get_model(
                "safelab/default",
                batch_size=batch,
                steer=str(vec_dir),
                steer_scale=args.steer_scale,
            ),
        }
        logs: dict[str, list[str]] = {name: [] for name in models}
        batches: dict[str, list[list[int]]] = {name: [] for name in models}

        def run(name: str) -> None:
            sizes.clear()
            (log,) = inspect_eval(
                bench_task(),
                model=models[name],
                display="none",
                log_dir=str(Path(tmp) / "logs" / name),
                max_connections=batch,
                max_tokens=args.max_tokens,
                log_level="warning",
            )
            if log.status != "success":
                raise SystemExit(f"{name} eval failed: {log.error}")
            logs[name].append(log.location)
            batches[name].append(list(sizes))

        print("warm-up: one eval of each (not timed)")
        for name in models:
            run(name)
        print(f"timing: {args.reps} interleaved repetitions (order rotates), medians reported")
        times = interleaved({name: (lambda n=name: run(n)) for name in models}, args.reps)
        print_table(times)
        print("samples per generate call, per eval (one call of 16 = fully batched):")
        for name in models:
            print(f"  {name:<16} {batches[name]}")

        # -- tokens and outputs, from the last log of each -----------------------------------
        tok = wb.tokenizer
        completions: dict[str, list[str]] = {}
        tokens: dict[str, int] = {}
        longest: dict[str, int] = {}
        for name in models:
            log = read_eval_log(logs[name][-1])
            samples = sorted(log.samples or [], key=lambda s: int(s.id))
            completions[name] = [s.output.completion for s in samples]
            usage = sum(s.output.usage.output_tokens if s.output.usage else 0 for s in samples)
            lengths = [
                len(tok(c, add_special_tokens=False)["input_ids"]) for c in completions[name]
            ]
            tokens[name] = sum(lengths)
            longest[name] = max(lengths)
            acc = log.results.scores[0].metrics["accuracy"].value if log.results else None
            print(
                f"{name:<16} output tokens: {tokens[name]} re-tokenised, {usage} by usage; "
                f"longest {longest[name]}; {tokens[name] / median(times[name]):.1f} tokens/s; "
                f"accuracy {acc}"
            )
        same = sum(
            a == b for a, b in zip(completions["safelab"], completions["inspect_hf"], strict=True)
        )
        changed = sum(
            a != b
            for a, b in zip(completions["safelab"], completions["safelab_steered"], strict=True)
        )
        print(f"greedy completions identical, safelab vs inspect_hf: {same}/{batch}")
        print(f"completions changed by steering: {changed}/{batch}")
        print(f"  e.g. plain:   {completions['safelab'][0]!r}")
        print(f"       steered: {completions['safelab_steered'][0]!r}")
        # A batch decodes until its longest sample ends (finished rows still run), so the fair
        # normalisation is per decode step, not per output token: steering changes the texts.
        step = {n: median(times[n]) / max(1, longest[n]) for n in models}
        print(
            f"steered vs plain: longest completion {longest['safelab_steered']} vs "
            f"{longest['safelab']} tokens; per-decode-step ratio (plain / steered): "
            f"{step['safelab'] / step['safelab_steered']:.3f} (equals the time ratio when the "
            "longest completions are equal)"
        )
        print(f"count_text_tokens calls (patched, tiktoken avoided): {len(token_calls)}")
    print(machine_note())
    final_json(
        {
            "eval_vs_inspect_hf": ratio(times["inspect_hf"], times["safelab"]),
            "steered_vs_plain": ratio(times["safelab"], times["safelab_steered"]),
            "tokens_per_s": round(tokens["safelab"] / median(times["safelab"]), 2),
        }
    )


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
