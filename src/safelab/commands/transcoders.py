"""``safelab transcoders``: per-layer transcoders (MLP in -> sparse features -> MLP out) on CPU."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from safelab.commands.sae import parse_count

DEFAULT_OUT = "runs/transcoders"


def register(subparsers: Any) -> None:
    from safelab.transcoders.train import TranscoderTrainConfig

    parser = subparsers.add_parser("transcoders", help="per-layer transcoders: train, eval")
    sub = parser.add_subparsers(dest="tc_command", metavar="TC_COMMAND", required=True)
    d = TranscoderTrainConfig(store="", out="")
    tr = sub.add_parser("train", help="capture both MLP sites once, train every layer (resumable)")
    tr.add_argument("--out", default=DEFAULT_OUT, help=f"set folder (default {DEFAULT_OUT})")
    tr.add_argument("--store", default=None, help="store of mlp_in + mlp_out (default: OUT/store)")
    tr.add_argument("--data", default=None, help="texts (.txt/.csv/.jsonl; default: shared data)")
    tr.add_argument(
        "--tokens", type=parse_count, default=d.tokens, help="training tokens per layer"
    )
    tr.add_argument(
        "--capture-tokens", type=parse_count, default=50_000, help="tokens to capture (50k)"
    )
    tr.add_argument("--expansion", type=int, default=d.expansion)
    tr.add_argument("--k", type=int, default=d.k)
    tr.add_argument("--skip", action="store_true", help="add a linear skip connection")
    tr.add_argument("--layers", default=None, help="e.g. 0,1,2 (default: every layer)")
    tr.add_argument("--batch-size", type=int, default=d.batch_size)
    tr.add_argument("--seed", type=int, default=d.seed)
    tr.add_argument("--model", default="default")
    tr.add_argument("--no-eval", action="store_true")
    tr.set_defaults(func=_train)
    ev = sub.add_parser("eval", help="held-out EV per layer; replacement-model CE and KL")
    ev.add_argument("transcoders", help="set folder")
    ev.add_argument("--store", default=None)
    ev.add_argument("--model", default=None)
    ev.add_argument("--ce-tokens", type=parse_count, default=4096, help="0 skips CE/KL")
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(func=_eval)


def _store(args: argparse.Namespace, model: Any) -> Path:
    from safelab.interp.store import MANIFEST, ActivationStore, capture_to_store
    from safelab.sae.texts import build_passages, read_sentences

    path = Path(args.store or Path(args.out) / "store")
    if (path / MANIFEST).is_file() and (ActivationStore(path).manifest.complete or args.store):
        print(f"reusing the store at {path}")
        return path
    if args.data:
        from safelab.data import read_inputs

        texts: list[Any] = list(read_inputs(args.data))
    else:
        texts = build_passages(read_sentences(), model.tokenizer, args.capture_tokens)
    print(f"capturing blocks.*.mlp_in and blocks.*.mlp_out for {len(texts)} texts into {path}")
    capture_to_store(
        model,
        texts,
        "blocks.*.mlp_in,blocks.*.mlp_out",
        path,
        position="all",
        batch_size=16,
        shard_rows=8192,
        dtype="float16",
        meta={"data": str(args.data or "shared")},
    )
    return path


def _train(args: argparse.Namespace) -> int:
    from safelab.models.loading import load_model
    from safelab.transcoders.train import TranscoderTrainConfig, train_transcoders

    model = load_model(args.model, dtype="float32")
    store = _store(args, model)
    layers = tuple(int(x) for x in args.layers.split(",")) if args.layers else None
    cfg = TranscoderTrainConfig(
        store=str(store),
        out=args.out,
        model=args.model,
        layers=layers,
        expansion=args.expansion,
        k=args.k,
        tokens=args.tokens,
        batch_size=args.batch_size,
        seed=args.seed,
        skip=args.skip,
    )
    out = train_transcoders(cfg)
    print(f"saved transcoders to {out}")
    if not args.no_eval:
        return _eval_set(str(out), str(store), model, 4096, args.seed)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from safelab.models.loading import load_model
    from safelab.transcoders.transcoder import load_transcoders

    ts = load_transcoders(args.transcoders)
    store = args.store or (ts.meta.train or {}).get("store")
    model = None
    if args.ce_tokens > 0:
        model = load_model(args.model or ts.meta.train.get("model") or "default", dtype="float32")
    return _eval_set(args.transcoders, str(store), model, args.ce_tokens, args.seed)


def _eval_set(path: str, store: str, model: Any, ce_tokens: int, seed: int) -> int:
    import dataclasses

    from safelab.files import atomic_write_text
    from safelab.interp.store import ActivationStore
    from safelab.transcoders.metrics import evaluate_set
    from safelab.transcoders.transcoder import META_JSON, load_transcoders

    ts = load_transcoders(path)
    metrics = evaluate_set(ts, ActivationStore(store), model, ce_tokens=ce_tokens, seed=seed)
    ts.meta.metrics = metrics
    atomic_write_text(
        Path(path) / META_JSON, json.dumps(dataclasses.asdict(ts.meta), indent=2) + "\n"
    )
    shown = {k: v for k, v in metrics.items() if k != "layers"}
    for m in metrics["layers"]:
        lo, hi = m["explained_variance_ci"]
        print(
            f"layer {m['layer']:2d}  EV {m['explained_variance']:.3f} [{lo:.3f}, {hi:.3f}]  L0 {m['l0']:.1f}"
        )
    print(json.dumps(shown, indent=2))
    return 0
