"""llama.cpp single stream on a GGUF: the peer of ``bench/generate.py`` (run in .venv-bench).

Reads one JSON object on stdin: ``{"gguf", "prompts", "max_tokens", "threads", "reps"}``;
``prompts`` are token ids (the chat already rendered by the model's own template, the exact
tokens the torch peers get). Loads the GGUF with llama-cpp-python, runs a warm-up, then
completes every prompt one after the other (greedy), ``reps`` times. Prints one JSON
line: seconds per repetition, completion tokens per repetition (llama.cpp's own count), the
completions of the last repetition and llama.cpp's system info (the CPU features it was built
with: ``AMX_INT8 = 1`` there means the build can take the AMX path that segfaults, see
bench/setup.sh).
"""

from __future__ import annotations

import faulthandler
import json
import sys
import time


def main() -> None:
    faulthandler.enable()  # a crash in the C library prints the Python frame it came from
    import llama_cpp
    from llama_cpp import Llama

    job = json.load(sys.stdin)
    llm = Llama(
        model_path=job["gguf"],
        n_ctx=2048,
        n_threads=job["threads"],
        n_threads_batch=job["threads"],
        seed=0,
        verbose=False,
    )

    def answer(ids: list[int]) -> tuple[str, int]:
        out = llm.create_completion(
            prompt=ids, max_tokens=job["max_tokens"], temperature=0.0, top_k=1
        )
        return out["choices"][0]["text"] or "", int(out["usage"]["completion_tokens"])

    answer(job["prompts"][0])  # warm-up
    seconds, tokens, texts = [], [], []
    for _ in range(job["reps"]):
        t0 = time.perf_counter()
        results = [answer(p) for p in job["prompts"]]
        seconds.append(time.perf_counter() - t0)
        tokens.append(sum(n for _, n in results))
        texts = [t for t, _ in results]
    info = llama_cpp.llama_print_system_info().decode(errors="replace").strip()
    print(
        json.dumps(
            {
                "seconds": seconds,
                "tokens": tokens,
                "completions": texts,
                "version": llama_cpp.__version__,
                "system_info": info,
            }
        )
    )


if __name__ == "__main__":
    main()
