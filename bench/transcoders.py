"""Benchmark: a transcoder for every layer of the default model on 2 shared cores, and its quality.

1. one capture of ``blocks.*.mlp_in`` and ``blocks.*.mlp_out`` (float16) over ``--capture-tokens``
   tokens of the shared passages (reused when the store is there);
2. every layer's transcoder trained on ``--tokens`` tokens (epochs over the store's training
   inputs), split over ``--workers`` processes (each one torch thread, ``nice``);
3. the set evaluated: held-out explained variance of each MLP output, and the replacement
   model's CE loss and KL against the original with every MLP replaced.

The peer, timed in the same run: a step of safelab's SAE trainer (``BatchTopKTrainer``) on the
same batch and dictionary size; the ratio ``transcoder step / SAE step`` shows what the
transcoder's separate input and target cost.

Run::

    HF_HUB_OFFLINE=1 nice -n 10 .venv/bin/python bench/transcoders.py --out runs/transcoders \\
        --store runs/tc_store

Last line: ``{"train_wall_s", "layers", "tokens_per_layer", "ev_mean", "ev_min", "ce_original",
"ce_replacement", "kl_replacement", "step_vs_sae_step", ...}``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch

from _util import final_json, interleaved, machine_note, median

ROOT = Path(__file__).resolve().parents[1]


def worker(args: argparse.Namespace) -> None:
    from safelab.transcoders.train import TranscoderTrainConfig, train_transcoders

    torch.set_num_threads(1)
    layers = tuple(int(x) for x in args.layers.split(","))
    cfg = TranscoderTrainConfig(
        store=args.store,
        out=args.out,
        layers=layers,
        expansion=args.expansion,
        k=args.k,
        tokens=args.tokens,
        batch_size=args.batch_size,
        skip=args.skip,
    )
    train_transcoders(cfg, progress=False)


def peer_ratio(args: argparse.Namespace) -> float:
    from safelab.sae.train import BatchTopKTrainer
    from safelab.transcoders.train import TranscoderTrainConfig, TranscoderTrainer

    torch.set_num_threads(1)
    scfg = TranscoderTrainConfig(
        store="", out="/tmp/unused", expansion=args.expansion, k=args.k, batch_size=args.batch_size
    ).sae_config(0)
    tc = TranscoderTrainer(scfg, 576, 576, args.skip)
    sae = BatchTopKTrainer(scfg, 576)
    g = torch.Generator().manual_seed(0)
    x, y = (
        torch.randn(args.batch_size, 576, generator=g),
        torch.randn(args.batch_size, 576, generator=g),
    )
    tc.train_pair(x, y)
    sae.train_step(x)
    times = interleaved(
        {"transcoder": lambda: tc.train_pair(x, y), "sae": lambda: sae.train_step(x)}, 5
    )
    return round(median(times["transcoder"]) / median(times["sae"]), 3)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--out", default="runs/transcoders")
    p.add_argument("--store", default="runs/tc_store")
    p.add_argument("--capture-tokens", type=int, default=50_000)
    p.add_argument("--data", default=None, help="shared data folder (default: beside the repo)")
    p.add_argument("--tokens", type=int, default=100_000)
    p.add_argument("--expansion", type=int, default=4)
    p.add_argument("--k", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--skip", action="store_true")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--ce-tokens", type=int, default=4096)
    p.add_argument("--layers", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.layers is not None:
        worker(args)
        return

    from safelab.interp.store import MANIFEST, ActivationStore, capture_to_store
    from safelab.models.loading import load_model
    from safelab.sae.texts import build_passages, read_sentences
    from safelab.transcoders.metrics import evaluate_set
    from safelab.transcoders.transcoder import load_transcoders

    print(machine_note(), flush=True)
    model = load_model("default", dtype="float32")
    t0 = time.perf_counter()
    if not (Path(args.store) / MANIFEST).is_file():
        sents = read_sentences(Path(args.data)) if args.data else read_sentences()
        texts = build_passages(sents, model.tokenizer, args.capture_tokens)
        capture_to_store(
            model,
            texts,
            "blocks.*.mlp_in,blocks.*.mlp_out",
            args.store,
            position="all",
            shard_rows=8192,
            dtype="float16",
        )
    capture_s = time.perf_counter() - t0
    store = ActivationStore(args.store)
    n_layers = model.n_layers
    t1 = time.perf_counter()
    procs = []
    for w in range(args.workers):
        layers = ",".join(str(x) for x in range(w, n_layers, args.workers))
        cmd = [sys.executable, __file__, "--layers", layers]
        for key in ("out", "store", "tokens", "expansion", "k", "batch_size"):
            cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
        if args.skip:
            cmd.append("--skip")
        procs.append(subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}))
    codes = [pr.wait() for pr in procs]
    if any(codes):
        raise SystemExit(f"a training worker failed: {codes}")
    train_s = time.perf_counter() - t1
    print(f"trained {n_layers} layers in {train_s:.0f}s wall ({machine_note()})", flush=True)
    ts = load_transcoders(args.out)
    t2 = time.perf_counter()
    metrics = evaluate_set(ts, store, model, ce_tokens=args.ce_tokens)
    eval_s = time.perf_counter() - t2
    ts.meta.metrics = metrics
    from dataclasses import asdict

    (Path(args.out) / "safelab.json").write_text(json.dumps(asdict(ts.meta), indent=2) + "\n")
    for m in metrics["layers"]:
        lo, hi = m["explained_variance_ci"]
        print(
            f"layer {m['layer']:2d}  EV {m['explained_variance']:.3f} [{lo:.3f}, {hi:.3f}]  L0 {m['l0']:.1f}  dead {m['dead_fraction']:.2f}"
        )
    ratio = peer_ratio(args)
    per = ts.meta.train.get("per_layer", {})
    final_json(
        {
            "layers": len(ts),
            "tokens_per_layer": args.tokens,
            "capture_tokens": store.manifest.rows,
            "d_sae": ts[0].d_sae,
            "k": args.k,
            "workers": args.workers,
            "capture_s": round(capture_s, 1),
            "train_wall_s": round(train_s, 1),
            "train_s_per_layer_median": median(
                [float(r["train_seconds_this_run"]) for r in per.values()]
            )
            if per
            else None,
            "eval_s": round(eval_s, 1),
            "ev_mean": metrics["explained_variance_mean"],
            "ev_min": metrics["explained_variance_min"],
            "ce_original": metrics.get("ce_original"),
            "ce_original_ci": metrics.get("ce_original_ci"),
            "ce_replacement": metrics.get("ce_replacement"),
            "ce_replacement_ci": metrics.get("ce_replacement_ci"),
            "kl_replacement": metrics.get("kl_replacement"),
            "kl_replacement_ci": metrics.get("kl_replacement_ci"),
            "step_vs_sae_step": ratio,
            "loadavg_end": os.getloadavg()[0],
        }
    )


if __name__ == "__main__":
    main()
