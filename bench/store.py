"""Benchmark: stream ~1M tokens of activations at one site into the on-disk activation store.

Texts are built at run time from the public data in ``../shared/data`` (nothing is copied into
the project): the statements of the truth CSVs and the instructions of the refusal splits,
shuffled with a fixed seed and joined into passages of about ``--text-tokens`` tokens until
``--tokens`` tokens are reached (when the data run out, they are reshuffled with the next seed, so
passages are new combinations rather than verbatim repeats).

The capture is ``capture_to_store(model, texts, SITE, out_dir, position="all", dtype=...)`` into a
temp folder (deleted afterwards unless ``--keep``). Reported:

- peak RSS: ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (whole process, model load included) and
  the maximum of RSS sampled every 0.1 s during the capture, with the RSS before it;
- rows/s (= tokens/s, one row per token) over the wall clock of ``capture_to_store`` (which includes
  tokenising all inputs and writing every shard and manifest);
- the store's size on disk, shards and rows, and a read-back check of the row count.

``--max-minutes`` caps the capture on a slow machine: when the budget runs out, the capture is
interrupted, and the figures cover the shards committed so far (rows/s = committed rows / time of
the last commit); the JSON then says ``"complete": false`` and ``"target_tokens"``. A store is
resumable, so nothing is corrupted by the interruption.

Run::

    HF_HUB_OFFLINE=1 .venv/bin/python bench/store.py [--tokens 1000000] [--dtype float16]

Last line: ``{"tokens": n, "peak_rss_gb": x, "tokens_per_s": t}`` (peak_rss_gb from ru_maxrss).
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from _util import final_json, machine_note
from safelab.errors import SafelabError
from safelab.sae.texts import build_passages, read_sentences

SITE = "blocks.15.resid_post"
DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


class RssSampler:
    """Samples this process's RSS in a thread; ``peak`` is the maximum seen."""

    def __init__(self, every_s: float = 0.1) -> None:
        import psutil

        self.proc = psutil.Process()
        self.every_s = every_s
        self.peak = self.proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.peak = max(self.peak, self.proc.memory_info().rss)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)


class BudgetSpent(Exception):
    """Raised in the main thread by SIGALRM when ``--max-minutes`` runs out."""


def _on_alarm(_signum: int, _frame: Any) -> None:
    raise BudgetSpent


def gb(n_bytes: float) -> float:
    return round(n_bytes / 1e9, 3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=1_000_000, help="tokens to capture (about)")
    ap.add_argument("--text-tokens", type=int, default=128, help="tokens per passage (about)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--shard-rows", type=int, default=65536, help="rows per store shard")
    ap.add_argument("--dtype", default="float16", choices=["float32", "float16", "bfloat16"])
    ap.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    ap.add_argument("--out", type=Path, default=None, help="store folder (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the store afterwards")
    ap.add_argument(
        "--max-minutes", type=float, default=0, help="stop the capture after this (0: no limit)"
    )
    args = ap.parse_args()

    from safelab.interp.store import ActivationStore, capture_to_store
    from safelab.models.loading import load_model

    model = load_model("default", dtype="float32", device="cpu")
    try:
        sentences = read_sentences(args.data)
    except SafelabError as err:
        raise SystemExit(str(err)) from None
    t0 = time.perf_counter()
    # The same passages `safelab sae train` captures by default (safelab.sae.texts).
    texts = build_passages(sentences, model.tokenizer, args.tokens, args.text_tokens)
    tokens = sum(len(ids) for ids in model.tokenizer(texts, add_special_tokens=True)["input_ids"])
    print(
        f"{len(sentences)} sentences from {args.data.resolve()} -> {len(texts)} passages, "
        f"{tokens} tokens (built in {time.perf_counter() - t0:.1f}s)"
    )
    print(
        f"site {SITE}, position=all, store dtype {args.dtype}, batch {args.batch_size}, "
        f"shards of {args.shard_rows} rows, CPU"
    )
    print(machine_note())

    tmp = Path(tempfile.mkdtemp(prefix="safelab-bench-store-"))
    out = args.out or tmp / "store"
    try:
        rss_before = RssSampler().peak
        complete = True
        if args.max_minutes > 0:
            signal.signal(signal.SIGALRM, _on_alarm)
            signal.setitimer(signal.ITIMER_REAL, args.max_minutes * 60)
        with RssSampler() as sampler:
            t0 = time.perf_counter()
            t0_wall = time.time()
            try:
                capture_to_store(
                    model,
                    texts,
                    SITE,
                    out,
                    position="all",
                    batch_size=args.batch_size,
                    dtype=args.dtype,
                    shard_rows=args.shard_rows,
                    progress=False,
                )
                wall = time.perf_counter() - t0
            except BudgetSpent:
                complete = False
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        check = ActivationStore(out)
        rows = len(check)
        if not complete:
            # Committed rows only, timed to the last commit (the manifest is rewritten then).
            wall = (out / "manifest.json").stat().st_mtime - t0_wall
            print(
                f"budget of {args.max_minutes} min spent: capture interrupted after "
                f"{check.manifest.inputs_done}/{len(texts)} passages; figures cover the "
                f"{len(check.manifest.shards)} committed shards"
            )
        disk = sum(f.stat().st_size for f in out.iterdir())
        print(
            f"store: {rows} rows, {len(check.manifest.shards)} shards, "
            f"{gb(disk)} GB on disk, complete={check.manifest.complete}"
        )
        if complete and rows != tokens:
            print(f"!! rows ({rows}) != tokens ({tokens})")
        print(f"capture_to_store wall: {wall:.1f}s -> {rows / max(wall, 1e-9):.0f} rows/s")
        print(
            f"RSS: before capture {gb(rss_before)} GB, sampled peak {gb(sampler.peak)} GB, "
            f"ru_maxrss {gb(maxrss)} GB (target < 2 GB)"
        )
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print(machine_note())
    result: dict[str, Any] = {
        "tokens": rows,
        "peak_rss_gb": gb(maxrss),
        "tokens_per_s": round(rows / wall, 1) if wall > 0 else None,
    }
    if not complete:
        result.update(complete=False, target_tokens=tokens)
    final_json(result)


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
