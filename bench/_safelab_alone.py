"""The 16-sample eval of ``bench/generate.py`` through ``safelab/default`` alone in its process.

The peer of llama.cpp's subprocess (``_llamacpp_peer.py``) for the ``alone`` section: one model,
one provider, nothing else loaded, as a user's eval runs. Reads one JSON object on stdin:
``{"max_tokens", "reps"}``. Loads the model, runs one warm-up eval (not timed), then ``reps``
timed evals, each with the prefix cache cleared first (as the in-process section does). Prints
one JSON line in ``_llamacpp_peer.py``'s shape: seconds and output tokens per repetition
(re-tokenised from the last repetition's completions: greedy, the same every time) and those
completions.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    warnings.filterwarnings("ignore")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    from inspect_ai.model import get_model

    import generate as bench

    job = json.load(sys.stdin)
    batch = len(bench.QUESTIONS)
    model = get_model("safelab/default", batch_size=batch)
    with tempfile.TemporaryDirectory(prefix="safelab-bench-alone-") as tmp:
        logs = Path(tmp) / "logs"
        bench.run_eval(bench.bench_task(), model, logs, batch, job["max_tokens"])  # warm-up
        seconds, location = [], ""
        for _ in range(job["reps"]):
            bench.clear_caches(model)
            t0 = time.perf_counter()
            log = bench.run_eval(bench.bench_task(), model, logs, batch, job["max_tokens"])
            seconds.append(time.perf_counter() - t0)
            location = log.location
        completions = bench.completions_of(location)
    tok = model.api.model.tokenizer  # type: ignore[attr-defined]
    tokens = sum(len(tok(c, add_special_tokens=False)["input_ids"]) for c in completions)
    # one token count per repetition, as _llamacpp_peer.py reports (greedy: the same each time)
    out = {"seconds": seconds, "tokens": [tokens] * len(seconds), "completions": completions}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
