"""``safelab steer``: steering vectors from A/B pairs (train, sweep, apply).

``sweep`` captures every layer's activation at the answer token once (cached), makes one
vector per layer from the training pairs, then measures ``Δp(matching answer)`` on held-out
pairs for each (layer, scale) and the multiple-choice accuracy cost at the best layer.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from safelab.commands.data_options import activations, add_data_options, load
from safelab.commands.options import add_options, add_ray_option, from_options


def _sweep(args: argparse.Namespace) -> int:
    from safelab.distributed import ray_address
    from safelab.interp.steer_run import SteerSweepConfig, run_steer_sweep

    run = run_steer_sweep(from_options(SteerSweepConfig, args), args.out, ray=ray_address(args.ray))
    for line in run.summary_lines():
        print(line)
    print(f"wrote {Path(args.out) / 'metrics.json'}, {Path(args.out) / 'vector'}")
    return 0


def _train(args: argparse.Namespace) -> int:
    from safelab.interp.steer_sweep import contrast_vectors

    model, data = load(args, args.data)
    (site,) = (str(s) for s in model.resolve_sites(args.site))
    cached = activations(args, model, data)
    if site not in cached.acts:
        cached = activations(args, model, data, site)
    vec = contrast_vectors(
        {site: cached.acts[site]}, data, method=args.method, model_name=model.name, seed=args.seed
    )[site]
    vec.cfg.scale = args.scale
    vec.cfg.positions = args.positions
    path = vec.save(args.out)
    print(f"{vec} from {len(data) // 2} pairs -> {path}")
    return 0


def _apply(args: argparse.Namespace) -> int:
    from safelab.interp.steering import resolve_steer
    from safelab.models.loading import load_model

    spec = resolve_steer(args.vector, scale=args.scale)
    model = load_model(args.model)
    chat = [{"role": "user", "content": args.prompt}]
    (plain,) = model.generate([chat], max_new_tokens=args.max_tokens)
    with spec.apply(model):
        (steered,) = model.generate([chat], max_new_tokens=args.max_tokens)
    print(f"--- unsteered\n{plain}\n--- steered ({spec.site}, scale {spec.scale:+g})\n{steered}")
    return 0


def _steer_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--method",
        choices=["mean_diff", "pca"],
        default="mean_diff",
        help="contrastive mean difference or PCA of differences",
    )
    p.add_argument(
        "--positions",
        choices=["all", "last"],
        default="all",
        help="add the vector at every token or only the last",
    )


def register(subparsers: Any) -> None:
    """Add ``safelab steer {sweep,train,apply}``."""
    parser = subparsers.add_parser(
        "steer", help="steering vectors from A/B pairs: layer/scale sweeps, capability cost"
    )
    sub = parser.add_subparsers(dest="steer_command", required=True)

    from safelab.interp.steer_run import SteerSweepConfig

    sw = sub.add_parser("sweep", help="Δp(matching answer) by layer and scale on held-out pairs")
    sw.add_argument("--out", required=True)
    add_options(sw, SteerSweepConfig, skip=("kind",), required=("data",))
    add_ray_option(sw)
    sw.set_defaults(func=_sweep, kind="pairs")

    tr = sub.add_parser("train", help="one steering vector at one site from all pairs")
    tr.add_argument("--data", required=True)
    tr.add_argument("--site", required=True)
    tr.add_argument("--out", required=True)
    tr.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="scale saved with the vector (-M steer_scale overrides)",
    )
    add_data_options(tr, kinds=False)
    _steer_options(tr)
    tr.set_defaults(func=_train, kind="pairs")

    ap = sub.add_parser("apply", help="generate with and without a steering vector")
    ap.add_argument("--vector", required=True)
    ap.add_argument("--prompt", required=True)
    ap.add_argument("--scale", type=float, default=None)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--model", default="default")
    ap.set_defaults(func=_apply)
