"""Benchmark: generation through ``safelab/`` against Inspect's ``hf/`` provider and llama.cpp.

One command, every ratio in the same run, a JSON written at the end (``--out``). All on CPU,
float32 for the torch peers, the same weights (the cached dequantised folder of the default
model; llama.cpp runs the GGUF it came from, Q4_1, as it ships).

1. **16-sample eval** (16 short questions, greedy, ``max_tokens=32``, ``max_connections=16``):
   ``safelab`` (``safelab/default``: continuous batching and the prefix cache, the defaults),
   ``safelab_static`` (``-M batching=static prefix_cache_mb=0``: one padded ``generate`` call,
   the code path before issue 22), ``inspect_hf`` (``hf/<folder>``, ``batch_size=16``) and
   ``safelab_steered`` (a vector from ``SteeringVector.from_contrast``, ``steer_scale``), and
   ``safelab_bf16`` (``-M dtype=bfloat16``: opt-in, not exact; how many greedy completions
   differ from float32 is printed), and ``safelab_mkl`` (``-M linear=torch``: the default before
   the oneDNN-packed linear kernel, MKL's sgemm; greedy completions compared). Each
   model is created once before timing; a warm-up eval of each is discarded; then the evals are
   timed interleaved (order rotates) and medians reported. The prefix cache is cleared before
   every safelab eval, so only sharing within one eval counts. Greedy completions are compared
   across the three plain peers (identical is the requirement).
2. **agentic_misalignment** (``--agentic-samples`` samples, prefill-heavy: ~1,500 prompt tokens
   each, greedy, ``--agentic-max-tokens``, ``classifier=pattern`` so no judge model runs):
   end-to-end eval time of ``static`` (before: static batching, no cache) vs ``cached``
   (continuous batching with a cache cleared before the eval: sharing within the eval only) vs
   ``warm`` (the same eval again with the cache left from the previous one: what a sweep, a
   validation matrix or an epoch resending the same prompts gets). ``--agentic-repeats R``
   sends each of the samples R times (greedy, so the R completions of a prompt are the same):
   the catalogue's organism comparison samples each condition 8 times, every repeat resending
   the same ~1,500-token prompt.
3. **llama.cpp single stream** (llama-cpp-python from ``.venv-bench``, ``bash bench/setup.sh``):
   the 16 questions one after the other through ``create_completion`` on the exact prompt
   token ids the torch peers get (greedy, same ``max_tokens``, 1 thread and
   ``--llamacpp-threads``), tokens/s from its own usage counts, vs the safelab eval's tokens/s
   (Inspect's own per-eval overhead included in ours, not in theirs): ``eval_vs_llamacpp``.
   Its greedy text is compared with safelab's float32 completions and reported, not required:
   llama.cpp computes with the Q4_1 weights as stored and 8-bit activations.
4. **Alone** (``alone``): the safelab eval and llama.cpp each alone in its own process
   (``_safelab_alone.py``, ``_llamacpp_peer.py``), interleaved over ``--alone-rounds`` rounds of
   ``--alone-reps`` repetitions: ``eval_alone_vs_llamacpp``, the comparison in which neither
   side shares its process with other peers.
5. **CPU path**: raw decode of the 16 prompts (no Inspect) at 1 and 2 torch threads, alone and
   with one competing busy process on the cores; the linear kernel (``torch``, MKL, vs
   ``onednn``, packed weights: ``onednn_vs_mkl_raw``); and ``sdpa`` vs ``eager`` attention.

Output tokens are re-tokenised from the completions (the hf provider reports the padded batch
length as every sample's ``output_tokens``). Inspect's default ``count_text_tokens`` downloads
tiktoken: the hf provider's is patched to count with the tokenizer (calls printed).

Run::

    HF_HUB_OFFLINE=1 .venv/bin/python bench/generate.py [--reps 3] [--out runs/bench-generate.json]

Last line: the JSON object (also written to ``--out``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
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
    """Record how many samples decoded together: per ``generate`` call (static paths) and the
    largest running batch of each continuous decode step."""
    import inspect_ai.model._providers.hf as hf_provider

    import safelab.provider.batcher as safelab_api
    from safelab.models.decode import DecodeBatch
    from safelab.models.openmp import release_workers

    safelab_generate = safelab_api.generate_batch
    hf_generate = hf_provider._generate_batch
    step = DecodeBatch.step

    def safelab_wrapper(model: Any, texts: Any, *a: Any, **k: Any) -> Any:
        sizes.append(len(texts))
        return safelab_generate(model, texts, *a, **k)

    def hf_wrapper(batch: Any) -> Any:
        sizes.append(len(batch))
        try:
            return hf_generate(batch)
        finally:
            # Inspect's hf provider computes on its own long-lived thread: left alone, that
            # thread's idle OpenMP workers make every other peer's workers sleep between
            # parallel regions (1.3 cores used instead of 1.9; safelab.models.openmp). The
            # safelab provider releases its own; this gives the hf peer the same treatment.
            release_workers()

    def step_wrapper(self: Any) -> Any:
        sizes.append(-len(self))  # negative: a continuous step (its batch size)
        return step(self)

    safelab_api.generate_batch = safelab_wrapper  # type: ignore[assignment]
    hf_provider._generate_batch = hf_wrapper
    DecodeBatch.step = step_wrapper  # type: ignore[method-assign]


def clear_caches(*models: Any) -> None:
    for m in models:
        api = getattr(m, "api", None)
        cache = getattr(getattr(api, "batcher", None), "cache", None)
        if cache is not None:
            cache.clear()


def run_eval(task: Any, model: Any, log_dir: Path, connections: int, max_tokens: int) -> Any:
    from inspect_ai import eval as inspect_eval

    (log,) = inspect_eval(
        task,
        model=model,
        display="none",
        log_dir=str(log_dir),
        max_connections=connections,
        max_tokens=max_tokens,
        log_level="warning",
    )
    if log.status != "success":
        raise SystemExit(f"eval failed: {log.error}")
    return log


def completions_of(location: str) -> list[str]:
    from inspect_ai.log import read_eval_log

    log = read_eval_log(location)
    samples = sorted(log.samples or [], key=lambda s: str(s.id))
    return [s.output.completion for s in samples]


def summarise_sizes(sizes: list[int]) -> str:
    steps = [-x for x in sizes if x < 0]
    calls = [x for x in sizes if x > 0]
    parts = []
    if calls:
        parts.append(f"generate calls of {calls}")
    if steps:
        parts.append(f"{len(steps)} continuous steps, running batch up to {max(steps)}")
    return "; ".join(parts) or "none"


def eval16(
    args: argparse.Namespace, wb: Any, folder: str, tmp: Path, out: dict[str, Any]
) -> list[str]:
    """The 16-sample eval of every peer; returns safelab's greedy completions."""
    from inspect_ai.model import get_model

    from safelab.interp.steering import SteeringVector

    batch = len(QUESTIONS)
    site = "blocks.15.resid_post"
    pos = wb.capture(POSITIVE, site, position="last")[site]
    neg = wb.capture(NEGATIVE, site, position="last")[site]
    vector = SteeringVector.from_contrast(pos, neg, site, model=wb.name, scale=args.steer_scale)
    vec_dir = tmp / "vector"
    vector.save(vec_dir)
    print(f"steering vector: {vector} saved to {vec_dir}, scale {args.steer_scale}")
    models = {
        "safelab": get_model("safelab/default", batch_size=batch),
        "safelab_static": get_model(
            "safelab/default", batch_size=batch, batching="static", prefix_cache_mb=0
        ),
        # the default before the packed oneDNN linear kernel: MKL's sgemm through F.linear
        "safelab_mkl": get_model("safelab/default", batch_size=batch, linear="torch"),
        "inspect_hf": get_model(f"hf/{folder}", do_sample=False, batch_size=batch),
        "safelab_steered": get_model(
            "safelab/default", batch_size=batch, steer=str(vec_dir), steer_scale=args.steer_scale
        ),
        # opt-in, not exact: bfloat16 weights and cache (AMX / avx512_bf16 matmuls on this CPU)
        "safelab_bf16": get_model("safelab/default", batch_size=batch, dtype="bfloat16"),
    }
    logs: dict[str, list[str]] = {name: [] for name in models}
    sizes: list[int] = []
    record_batch_sizes(sizes)
    batches: dict[str, str] = {}

    def run(name: str) -> None:
        sizes.clear()
        clear_caches(models[name])
        log = run_eval(bench_task(), models[name], tmp / "logs" / name, batch, args.max_tokens)
        logs[name].append(log.location)
        batches[name] = summarise_sizes(sizes)

    print("warm-up: one eval of each (not timed)")
    for name in models:
        run(name)
    print(f"timing: {args.reps} interleaved repetitions (order rotates), medians reported")
    times = interleaved({name: (lambda n=name: run(n)) for name in models}, args.reps)
    print_table(times)
    print("samples decoded together, last eval of each:")
    for name in models:
        print(f"  {name:<16} {batches[name]}")
    tok = wb.tokenizer
    comps = {name: completions_of(logs[name][-1]) for name in models}
    tokens: dict[str, int] = {}
    longest: dict[str, int] = {}
    for name in models:
        lengths = [len(tok(c, add_special_tokens=False)["input_ids"]) for c in comps[name]]
        tokens[name], longest[name] = sum(lengths), max(lengths)
        print(
            f"{name:<16} output tokens {tokens[name]} (longest {longest[name]}); "
            f"{tokens[name] / median(times[name]):.1f} tokens/s of eval wall clock"
        )

    def same(a: str, b: str) -> int:
        return sum(x == y for x, y in zip(comps[a], comps[b], strict=True))

    print(
        f"greedy completions identical, safelab vs safelab_static: {same('safelab', 'safelab_static')}/{batch}"
    )
    print(
        f"greedy completions identical, safelab vs inspect_hf: {same('safelab', 'inspect_hf')}/{batch}"
    )
    print(
        f"greedy completions identical, safelab vs safelab_mkl: {same('safelab', 'safelab_mkl')}/{batch}"
    )
    print(f"completions changed by steering: {batch - same('safelab', 'safelab_steered')}/{batch}")
    print(
        f"greedy completions identical, safelab vs safelab_bf16: {same('safelab', 'safelab_bf16')}/{batch}"
    )
    step = {n: median(times[n]) / max(1, longest[n]) for n in models}
    out.update(
        eval_vs_inspect_hf=ratio(times["inspect_hf"], times["safelab"]),
        eval_vs_static=ratio(times["safelab_static"], times["safelab"]),
        eval_vs_mkl=ratio(times["safelab_mkl"], times["safelab"]),
        mkl_tokens_per_s=round(tokens["safelab_mkl"] / median(times["safelab_mkl"]), 2),
        identical_vs_mkl=f"{same('safelab', 'safelab_mkl')}/{batch}",
        steered_vs_plain=ratio(times["safelab"], times["safelab_steered"]),
        steered_vs_plain_per_step=round(step["safelab"] / step["safelab_steered"], 3),
        tokens_per_s=round(tokens["safelab"] / median(times["safelab"]), 2),
        static_tokens_per_s=round(tokens["safelab_static"] / median(times["safelab_static"]), 2),
        inspect_hf_tokens_per_s=round(tokens["inspect_hf"] / median(times["inspect_hf"]), 2),
        identical_vs_static=f"{same('safelab', 'safelab_static')}/{batch}",
        bf16_vs_plain=ratio(times["safelab"], times["safelab_bf16"]),
        bf16_tokens_per_s=round(tokens["safelab_bf16"] / median(times["safelab_bf16"]), 2),
        identical_bf16=f"{same('safelab', 'safelab_bf16')}/{batch}",
        identical_vs_inspect_hf=f"{same('safelab', 'inspect_hf')}/{batch}",
        eval_seconds={n: round(median(times[n]), 3) for n in models},
    )
    return comps["safelab"]


def agentic(args: argparse.Namespace, tmp: Path, out: dict[str, Any]) -> None:
    from inspect_ai.model import get_model

    from safelab.evals.agentic import agentic_misalignment

    repeats = args.agentic_repeats
    n = args.agentic_samples * repeats

    def task() -> Any:
        from inspect_ai import Task

        t = agentic_misalignment(
            temperature=0.0,
            max_tokens=args.agentic_max_tokens,
            classifier="pattern",
            repeats=repeats,
        )
        return Task(
            dataset=list(t.dataset)[:n],  # condition-major: each sample's repeats in a row
            solver=t.solver,
            scorer=t.scorer,
            config=t.config,
            name="agentic_misalignment",
        )

    static = get_model("safelab/default", batch_size=n, batching="static", prefix_cache_mb=0)
    cached = get_model("safelab/default", batch_size=n)
    times: dict[str, list[float]] = {"static": [], "cached": [], "warm": []}
    locations: dict[str, str] = {}
    stats: dict[str, Any] = {}
    print(
        f"agentic_misalignment: {args.agentic_samples} samples x {repeats} repeats, greedy, "
        f"max_tokens={args.agentic_max_tokens}"
    )
    for rep in range(args.agentic_reps):
        order = ["static", "cached"] if rep % 2 == 0 else ["cached", "static"]
        for name in order:
            model = static if name == "static" else cached
            if name == "cached":
                clear_caches(cached)
                cache = cached.api.batcher.cache  # type: ignore[attr-defined]
                before = dict(vars(cache.stats))
            t0 = time.perf_counter()
            log = run_eval(task(), model, tmp / "agentic" / name, n, args.agentic_max_tokens)
            times[name].append(time.perf_counter() - t0)
            locations[name] = log.location
            if name == "cached":
                # The same eval again, the cache as the previous one left it.
                stats["cold"] = {k: v - before[k] for k, v in vars(cache.stats).items()}
                before = dict(vars(cache.stats))
                t0 = time.perf_counter()
                log = run_eval(task(), cached, tmp / "agentic" / "warm", n, args.agentic_max_tokens)
                times["warm"].append(time.perf_counter() - t0)
                locations["warm"] = log.location
                stats["warm"] = {k: v - before[k] for k, v in vars(cache.stats).items()}
        row = "  ".join(f"{k}={v[-1]:.1f}s" for k, v in times.items())
        print(f"  rep {rep + 1}/{args.agentic_reps}: {row}", flush=True)
    comps = {k: completions_of(v) for k, v in locations.items()}
    same = sum(a == b for a, b in zip(comps["static"], comps["cached"], strict=True))
    same_warm = sum(a == b for a, b in zip(comps["static"], comps["warm"], strict=True))
    print_table(times)
    print(f"prefix cache counters per eval (last rep): {stats}")
    print(f"greedy completions identical, static vs cached: {same}/{n}; vs warm: {same_warm}/{n}")
    out.update(
        agentic_repeats=repeats,
        agentic_speedup=ratio(times["static"], times["cached"]),
        agentic_speedup_warm=ratio(times["static"], times["warm"]),
        agentic_seconds={k: round(median(v), 2) for k, v in times.items()},
        agentic_identical=f"{same}/{n}",
        agentic_identical_warm=f"{same_warm}/{n}",
        agentic_cache=stats,
    )


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def question_texts(wb: Any) -> list[str]:
    """The 16 questions as chat prompts, rendered by the model's own template."""
    return [wb.prompt_text([{"role": "user", "content": q}]) for q, _ in QUESTIONS]


def llamacpp_python() -> Path | None:
    """``.venv-bench``'s interpreter when it has llama_cpp (``bash bench/setup.sh``), else None."""
    python = Path(__file__).resolve().parent.parent / ".venv-bench" / "bin" / "python"
    if not python.exists():
        return None
    check = subprocess.run([str(python), "-c", "import llama_cpp"], capture_output=True)
    return python if check.returncode == 0 else None


def llamacpp_job(args: argparse.Namespace, wb: Any, threads: int, reps: int) -> dict[str, Any]:
    """The job ``_llamacpp_peer.py`` reads: the questions' exact token ids, greedy settings."""
    from safelab.models.generation import encode_prompts
    from safelab.models.loading import default_gguf_path

    texts = question_texts(wb)
    return {
        "gguf": str(default_gguf_path()),
        "prompts": encode_prompts(wb, texts, [True] * len(texts)),
        "max_tokens": args.max_tokens,
        "threads": threads,
        "reps": reps,
    }


def llamacpp(
    args: argparse.Namespace, wb: Any, out: dict[str, Any], ours: list[str] | None
) -> None:
    """llama.cpp single stream on the GGUF, and its greedy text against ``ours``.

    ``ours`` are the safelab eval's greedy completions (float32, the GGUF dequantised); when the
    eval section was skipped they are made here by one raw decode of the same prompts.
    """
    from safelab.models.generation import GenerationRequest, generate_batch
    from safelab.models.kvcache import PrefixCache

    python = llamacpp_python()
    if python is None:
        print("llama.cpp peer skipped: no llama_cpp in .venv-bench (run bash bench/setup.sh)")
        out["llamacpp"] = "skipped"
        return
    if ours is None:
        req = GenerationRequest(max_new_tokens=args.max_tokens)
        texts = question_texts(wb)
        ours = [r.text for r in generate_batch(wb, texts, req, cache=PrefixCache())]
    peer = Path(__file__).resolve().parent / "_llamacpp_peer.py"
    rates: dict[str, float | None] = {}
    theirs: list[str] = []
    info = ""
    for threads in sorted({1, args.llamacpp_threads or os.cpu_count() or 1}, reverse=True):
        job = llamacpp_job(args, wb, threads, args.llamacpp_reps)
        done = subprocess.run(
            [str(python), str(peer)], input=json.dumps(job), capture_output=True, text=True
        )
        if done.returncode != 0:  # e.g. a segfault (-11): report it, keep the rest of the run
            tail = (done.stderr or "").strip().splitlines()[-12:]
            print(f"llama.cpp peer failed at {threads} threads (exit {done.returncode}):")
            print("  " + "\n  ".join(tail))
            rates[f"threads{threads}"] = None
            continue
        res = json.loads(done.stdout.strip().splitlines()[-1])
        info = res.get("system_info", "")
        tps = [t / s for t, s in zip(res["tokens"], res["seconds"], strict=True)]
        rates[f"threads{threads}"] = round(statistics.median(tps), 2)
        theirs = res["completions"]
        print(
            f"llama.cpp {res['version']} single stream, {threads} threads: "
            f"{[round(x, 1) for x in res['seconds']]} s for {res['tokens']} tokens -> median "
            f"{rates[f'threads{threads}']:.1f} tokens/s ({machine_note()})",
            flush=True,
        )
    ok = {k: v for k, v in rates.items() if v is not None}
    if not ok:
        out.update(llamacpp="failed", llamacpp_tokens_per_s=rates)
        return
    print(f"llama.cpp system info: {info}")
    best_key = max(ok, key=lambda k: ok[k])
    best = ok[best_key]
    # Greedy text: llama.cpp multiplies the Q4_1 weights as stored, with activations rounded to
    # 8 bits (Q8_1) for the dot products and a float16 KV cache; safelab multiplies the same
    # weights dequantised to float32. So agreement is reported, not required.
    tok = wb.tokenizer
    ids_ours = [tok(c, add_special_tokens=False)["input_ids"] for c in ours]
    ids_theirs = [tok(c, add_special_tokens=False)["input_ids"] for c in theirs]
    same = sum(a == b for a, b in zip(ours, theirs, strict=True))
    prefix = [common_prefix(a, b) for a, b in zip(ids_ours, ids_theirs, strict=True)]
    shorter = [min(len(a), len(b)) for a, b in zip(ids_ours, ids_theirs, strict=True)]
    print(
        f"greedy completions identical, safelab (float32) vs llama.cpp (Q4_1 as stored): "
        f"{same}/{len(ours)}; tokens agreeing before the first difference: {sum(prefix)} of "
        f"{sum(shorter)} (per prompt {prefix})"
    )
    for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        if a != b:
            print(f"  first differing prompt {i}: safelab {a!r}\n{'':<26}llama.cpp {b!r}")
            break
    line = {}
    for name, key in (("eval", "tokens_per_s"), ("bf16 eval", "bf16_tokens_per_s")):
        if key in out:
            line[name] = round(out[key] / best, 3)
    if "raw_decode_tokens_per_s" in out:
        line["raw decode"] = round(max(out["raw_decode_tokens_per_s"].values()) / best, 3)
    print(
        f"safelab / llama.cpp ({best_key}, {best:.1f} tokens/s): "
        + ", ".join(f"{k} {v}" for k, v in line.items())
        + " (target >= 1.0 for the float32 eval)"
    )
    out.update(
        llamacpp_tokens_per_s=rates,
        llamacpp_system_info=info,
        eval_vs_llamacpp=line.get("eval"),
        bf16_eval_vs_llamacpp=line.get("bf16 eval"),
        raw_decode_vs_llamacpp=line.get("raw decode"),
        identical_vs_llamacpp=f"{same}/{len(ours)}",
        llamacpp_agreeing_tokens=f"{sum(prefix)}/{sum(shorter)}",
    )


def alone(args: argparse.Namespace, wb: Any, out: dict[str, Any], ours: list[str] | None) -> None:
    """The eval and llama.cpp each alone in its own process, interleaved: ``eval_alone_vs_llamacpp``.

    In the in-process section the safelab eval shares its process with five other peers (their
    models, caches and threads); llama.cpp always ran alone in a subprocess. Here both do:
    ``--alone-rounds`` rounds, each one subprocess of ``_safelab_alone.py`` and one of
    ``_llamacpp_peer.py`` (``--alone-reps`` timed repetitions each, after a warm-up; the order
    alternates between rounds), medians over all repetitions.
    """
    here = Path(__file__).resolve().parent
    bench_python = llamacpp_python()
    if bench_python is None:
        print("alone section skipped: no llama_cpp in .venv-bench (run bash bench/setup.sh)")
        return
    threads = args.llamacpp_threads or os.cpu_count() or 1
    jobs = {
        "safelab": ([sys.executable, str(here / "_safelab_alone.py")],
                    {"max_tokens": args.max_tokens, "reps": args.alone_reps}),
        "llamacpp": ([str(bench_python), str(here / "_llamacpp_peer.py")],
                     llamacpp_job(args, wb, threads, args.alone_reps)),
    }  # fmt: skip
    rates: dict[str, list[float]] = {"safelab": [], "llamacpp": []}
    comps: list[str] = []
    for r in range(args.alone_rounds):
        for name in ["safelab", "llamacpp"] if r % 2 == 0 else ["llamacpp", "safelab"]:
            cmd, job = jobs[name]
            done = subprocess.run(cmd, input=json.dumps(job), capture_output=True, text=True)
            if done.returncode != 0:
                tail = "\n  ".join((done.stderr or "").strip().splitlines()[-12:])
                print(f"alone section: {name} exited {done.returncode}:\n  {tail}")
                out["alone"] = "failed"
                return
            res = json.loads(done.stdout.strip().splitlines()[-1])
            tps = [t / s for t, s in zip(res["tokens"], res["seconds"], strict=True)]
            rates[name] += tps
            if name == "safelab":
                comps = res["completions"]
            print(
                f"  alone round {r + 1}/{args.alone_rounds}: {name} "
                f"{[round(x, 2) for x in res['seconds']]} s -> {[round(x, 1) for x in tps]} "
                f"tokens/s ({machine_note()})",
                flush=True,
            )
    ours_alone, theirs = median(rates["safelab"]), median(rates["llamacpp"])
    same = None if ours is None else sum(a == b for a, b in zip(ours, comps, strict=True))
    print(
        f"alone, each in its own process: safelab eval {ours_alone:.1f} tokens/s, llama.cpp "
        f"({threads} threads) {theirs:.1f}: eval / llama.cpp {ours_alone / theirs:.3f} "
        f"(target >= 1.0); completions identical to the in-process eval: "
        f"{'-' if same is None else f'{same}/{len(comps)}'}"
    )
    out.update(
        alone_tokens_per_s={k: [round(x, 2) for x in v] for k, v in rates.items()},
        alone_eval_tokens_per_s=round(ours_alone, 2),
        alone_llamacpp_tokens_per_s=round(theirs, 2),
        eval_alone_vs_llamacpp=round(ours_alone / theirs, 3),
        alone_identical_vs_in_process=None if same is None else f"{same}/{len(comps)}",
    )


def cpu_path(args: argparse.Namespace, wb: Any, out: dict[str, Any]) -> None:
    import torch

    from safelab.models.generation import GenerationRequest, generate_batch
    from safelab.models.kvcache import PrefixCache

    texts = question_texts(wb)
    req = GenerationRequest(max_new_tokens=args.max_tokens)

    def decode_rate() -> float:
        best = []
        for _ in range(2):
            t0 = time.perf_counter()
            res = generate_batch(wb, texts, req, cache=PrefixCache())
            best.append(sum(len(r.completion_ids) for r in res) / (time.perf_counter() - t0))
        return max(best)

    rates: dict[str, float] = {}
    saved = torch.get_num_threads()
    for competing in (False, True):
        hog = None
        if competing:  # one busy process on the cores, as another job would be
            hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            for threads in (1, 2):
                torch.set_num_threads(threads)
                key = f"threads{threads}_{'competing' if competing else 'alone'}"
                rates[key] = round(decode_rate(), 2)
                print(f"  raw decode, {key}: {rates[key]:.1f} tokens/s", flush=True)
        finally:
            torch.set_num_threads(saved)
            if hog is not None:
                hog.kill()
                hog.wait()
    # The linear kernel at 1 and 2 threads: interleaved (the order alternates), 3 runs each,
    # medians; each switch packs (or drops) the weights on a short untimed call first.
    kernels: dict[str, float] = {}
    for threads in (1, 2):
        torch.set_num_threads(threads)
        runs: dict[str, list[float]] = {"torch": [], "onednn": []}
        for rep in range(3):
            for kernel in ("torch", "onednn") if rep % 2 == 0 else ("onednn", "torch"):
                wb.use_linear_kernel(kernel)
                generate_batch(wb, texts[:2], req, cache=PrefixCache())
                t0 = time.perf_counter()
                res = generate_batch(wb, texts, req, cache=PrefixCache())
                runs[kernel].append(
                    sum(len(r.completion_ids) for r in res) / (time.perf_counter() - t0)
                )
        for kernel, rates_k in runs.items():
            kernels[f"{kernel}_threads{threads}"] = round(median(rates_k), 2)
            print(
                f"  raw decode, linear kernel {kernel}, {threads} threads: "
                f"{median(rates_k):.1f} tokens/s (runs {', '.join(f'{r:.1f}' for r in rates_k)})",
                flush=True,
            )
    torch.set_num_threads(saved)
    wb.use_linear_kernel("auto")
    attn: dict[str, float] = {}
    for impl in ("sdpa", "eager"):
        wb.hf.set_attn_implementation(impl)
        attn[impl] = round(decode_rate(), 2)
        print(f"  raw decode, attention {impl}: {attn[impl]:.1f} tokens/s", flush=True)
    wb.hf.set_attn_implementation("sdpa")
    out.update(
        raw_decode_tokens_per_s=rates,
        threads2_vs_threads1_competing=round(
            rates["threads2_competing"] / rates["threads1_competing"], 3
        ),
        threads2_vs_threads1_alone=round(rates["threads2_alone"] / rates["threads1_alone"], 3),
        attention_tokens_per_s=attn,
        linear_kernel_tokens_per_s=kernels,
        onednn_vs_mkl_raw={
            t: round(kernels[f"onednn_threads{t}"] / kernels[f"torch_threads{t}"], 3)
            for t in (1, 2)
        },
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions per eval (median)")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--steer-scale", type=float, default=4.0)
    ap.add_argument("--agentic-samples", type=int, default=4)
    ap.add_argument("--agentic-max-tokens", type=int, default=128)
    ap.add_argument("--agentic-reps", type=int, default=1)
    ap.add_argument(
        "--agentic-repeats", type=int, default=1, help="each agentic sample sent this many times"
    )
    ap.add_argument("--llamacpp-reps", type=int, default=2)
    ap.add_argument(
        "--llamacpp-threads", type=int, default=0, help="llama.cpp threads besides 1 (0: cores)"
    )
    ap.add_argument("--alone-rounds", type=int, default=2, help="alone section: rounds")
    ap.add_argument("--alone-reps", type=int, default=3, help="alone section: reps per process")
    ap.add_argument(
        "--skip", default="", help="comma-separated: eval, agentic, llamacpp, alone, cpu"
    )
    ap.add_argument("--out", default="runs/bench-generate.json", help="where the JSON goes")
    args = ap.parse_args()
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    import torch

    from safelab.models.loading import default_gguf_path, dequantised_folder, load_model

    folder = str(dequantised_folder(default_gguf_path()))
    print(f"model folder: {folder}")
    print(f"{len(QUESTIONS)} samples, greedy, max_tokens={args.max_tokens}, float32, CPU")
    start_note = machine_note()
    print(start_note)
    wb = load_model("default", dtype="float32", device="cpu")
    token_calls: list[int] = []
    patch_token_counting(wb.tokenizer, token_calls)
    out: dict[str, Any] = {"threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory(prefix="safelab-bench-gen-") as tmp_name:
        tmp = Path(tmp_name)
        ours = None
        if "eval" not in skip:
            ours = eval16(args, wb, folder, tmp, out)
        if "agentic" not in skip:
            agentic(args, tmp, out)
        if "cpu" not in skip:
            cpu_path(args, wb, out)
        if "llamacpp" not in skip:
            llamacpp(args, wb, out, ours)
        if "alone" not in skip:
            alone(args, wb, out, ours)
    print(f"count_text_tokens calls (patched, tiktoken avoided): {len(token_calls)}")
    end_note = machine_note()
    print(end_note)
    out.update(machine_start=start_note, machine_end=end_note)
    target = Path(args.out)
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_suffix(".json.part")
    part.write_text(json.dumps(out, indent=2))
    os.replace(part, target)
    print(f"wrote {target}")
    final_json(out)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
