"""``safelab sae``: train sparse autoencoders on CPU, evaluate them, write feature pages."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from safelab.commands.options import add_options, add_ray_option, from_options
from safelab.config import parse_count
from safelab.errors import SafelabError


def register(subparsers: Any) -> None:
    from safelab.sae.run import SAEEvalConfig, SAERunConfig

    parser = subparsers.add_parser("sae", help="sparse autoencoders: train, eval, feature pages")
    sub = parser.add_subparsers(dest="sae_command", metavar="SAE_COMMAND", required=True)

    tr = sub.add_parser("train", help="capture (or reuse) a store and train a BatchTopK SAE")
    tr.add_argument("--out", required=True, help="SAE folder (rerun the command to resume)")
    add_options(tr, SAERunConfig)  # the CLI's defaults are the config's
    tr.add_argument(
        "--sites",
        nargs="+",
        default=None,
        help="one SAE per site into OUT/<site> (a grid: --ray runs each as a Ray task)",
    )
    add_ray_option(tr)
    tr.set_defaults(func=_train)

    ev = sub.add_parser("eval", help="held-out EV, L0, dead fraction, CE-loss recovered")
    ev.add_argument("sae", help="SAE folder (SAELens, sparsify or Gemma Scope)")
    add_options(ev, SAEEvalConfig, skip=("sae",))
    ev.add_argument("--out", default=None, help="folder for metrics.json (with the config)")
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
    from safelab.distributed import ray_address
    from safelab.sae.run import SAERunConfig, run_sae_layers, run_sae_train

    cfg = from_options(SAERunConfig, args)
    if args.sites:
        payload = run_sae_layers(cfg, args.sites, args.out, ray=ray_address(args.ray))
        for row in payload["saes"]:
            m = row["metrics"]
            ev = m.get("explained_variance")
            print(
                f"{row['site']}: {row['sae']}"
                + (f"  EV {ev:.3f}  L0 {m['l0']:.1f}" if ev is not None else "")
            )
        print(f"wrote {Path(args.out) / 'metrics.json'}")
        return 0
    if args.ray:
        raise SafelabError("--ray needs a grid: give --sites SITE [SITE ...]")
    result = run_sae_train(cfg, args.out)
    print(f"saved {result.sae} to {args.out}")
    if result.metrics:
        _print_metrics(result.metrics)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from safelab.sae.run import SAEEvalConfig, run_sae_eval

    result = run_sae_eval(from_options(SAEEvalConfig, args), args.out)
    _print_metrics(result.metrics)
    if result.saved_into is not None:
        print(f"metrics written into {result.saved_into}")
    if args.out:
        print(f"wrote {Path(args.out) / 'metrics.json'}")
    return 0


def _features(args: argparse.Namespace) -> int:
    from safelab.models.loading import load_model
    from safelab.sae.features import feature_page
    from safelab.sae.formats import load_sae
    from safelab.sae.run import training_texts

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
