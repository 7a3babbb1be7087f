"""``safelab sae``: train sparse autoencoders on CPU, evaluate them, write feature pages."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from safelab.errors import SafelabError


def parse_count(text: str) -> int:
    """``2M`` / ``300k`` / ``5000`` -> an int."""
    t = text.strip().lower().replace("_", "")
    mult = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}.get(t[-1:], 1)
    try:
        return int(float(t[:-1] if mult > 1 else t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (use e.g. 2M, 300k)") from None


def register(subparsers: Any) -> None:
    from safelab.sae.run import SAERunConfig

    parser = subparsers.add_parser("sae", help="sparse autoencoders: train, eval, feature pages")
    sub = parser.add_subparsers(dest="sae_command", metavar="SAE_COMMAND", required=True)
    d = SAERunConfig()  # the CLI's defaults are the config's

    tr = sub.add_parser("train", help="capture (or reuse) a store and train a BatchTopK SAE")
    tr.add_argument("--site", default=d.site)
    tr.add_argument("--tokens", type=parse_count, default=d.tokens, help="training tokens (2M)")
    tr.add_argument("--expansion", type=int, default=d.expansion, help="d_sae / d_model")
    tr.add_argument("--k", type=int, default=d.k, help="active latents per token")
    tr.add_argument("--out", required=True, help="SAE folder (rerun the command to resume)")
    tr.add_argument("--store", default=d.store, help="activation store (default: OUT/store)")
    tr.add_argument("--data", default=d.data, help="texts (.txt/.csv/.jsonl; default: shared data)")
    tr.add_argument(
        "--capture-tokens",
        type=parse_count,
        default=d.capture_tokens,
        help="tokens to capture when no store exists (default: --tokens; fewer means epochs)",
    )
    tr.add_argument("--model", default=d.model)
    tr.add_argument("--batch-size", type=int, default=d.batch_size, help="tokens per step")
    tr.add_argument("--base-lr", type=float, default=d.base_lr, help="lr at 2**14 latents")
    tr.add_argument("--seed", type=int, default=d.seed)
    tr.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps")
    tr.add_argument("--no-eval", action="store_true", help="skip the held-out metrics")
    tr.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="held-out EV, L0, dead fraction, CE-loss recovered")
    ev.add_argument("sae", help="SAE folder (SAELens, sparsify or Gemma Scope)")
    ev.add_argument("--store", default=None, help="store (default: the one it was trained on)")
    ev.add_argument("--model", default=None, help="model for CE recovered (default: the SAE's)")
    ev.add_argument("--ce-tokens", type=parse_count, default=8192, help="0 skips CE recovered")
    ev.add_argument("--seed", type=int, default=0)
    ev.set_defaults(func=_eval)

    fe = sub.add_parser("features", help="an HTML page of chosen features")
    fe.add_argument("sae", help="SAE folder")
    fe.add_argument("--data", default=None, help="texts to read (default: shared data passages)")
    fe.add_argument("--features", default=None, help="indices, e.g. 12,40 (default: most active)")
    fe.add_argument("--top", type=int, default=8, help="features when --features is not given")
    fe.add_argument("--limit", type=int, default=200, help="texts to read")
    fe.add_argument("--model", default=None)
    fe.add_argument("--out", default="sae_features.html")
    fe.set_defaults(func=_features)

    from safelab.commands.sae_diff import add_diff_parser

    add_diff_parser(sub)


def _train(args: argparse.Namespace) -> int:
    from safelab.sae.run import SAERunConfig, run_sae_train

    cfg = SAERunConfig(
        site=args.site,
        model=args.model,
        expansion=args.expansion,
        k=args.k,
        tokens=args.tokens,
        batch_size=args.batch_size,
        base_lr=args.base_lr,
        seed=args.seed,
        checkpoint_every=args.checkpoint_every,
        store=args.store,
        data=args.data,
        capture_tokens=args.capture_tokens,
        eval=not args.no_eval,
    )
    result = run_sae_train(cfg, args.out)
    print(f"saved {result.sae} to {args.out}")
    if result.metrics:
        _print_metrics(result.metrics)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from safelab.interp.store import ActivationStore
    from safelab.models.loading import load_model
    from safelab.sae.formats import SAELENS_WEIGHTS
    from safelab.sae.metrics import evaluate
    from safelab.sae.sae import load_sae, save_sae

    sae = load_sae(args.sae)
    store_path = args.store or sae.cfg.train.get("store")
    if not store_path:
        raise SafelabError(f"{args.sae} does not name its store: pass --store")
    model = None
    if args.ce_tokens > 0:
        model = load_model(args.model or sae.cfg.model or "default", dtype="float32")
    metrics = evaluate(
        sae, ActivationStore(store_path), model, ce_tokens=args.ce_tokens, seed=args.seed
    )
    _print_metrics(metrics)
    if (Path(args.sae) / SAELENS_WEIGHTS).is_file() and sae.cfg.source_format in (
        "safelab",
        "saelens",
    ):
        sae.cfg = sae.cfg.replace(metrics={**sae.cfg.metrics, **metrics})
        save_sae(sae, args.sae)
        print(f"metrics written into {Path(args.sae) / 'cfg.json'}")
    return 0


def _features(args: argparse.Namespace) -> int:
    from safelab.models.loading import load_model
    from safelab.sae.features import feature_page
    from safelab.sae.run import training_texts
    from safelab.sae.sae import load_sae

    sae = load_sae(args.sae)
    model = load_model(args.model or sae.cfg.model or "default", dtype="float32")
    texts = training_texts(args.data, model, 128 * args.limit)[: args.limit]
    chosen = [int(i) for i in args.features.split(",")] if args.features else None
    out = feature_page(sae, model, texts, args.out, features=chosen, top=args.top)
    print(f"wrote {out}")
    return 0


def _print_metrics(m: dict[str, Any]) -> None:
    shown = {k: v for k, v in m.items() if not k.startswith("_")}
    print(json.dumps(shown, indent=2))


__all__ = ["parse_count", "register"]
