"""Options and helpers shared by ``safelab probe``, ``steer`` and ``monitor``: the data and model
options, loading, the cached activations, atomic JSON output (the sweeps take theirs from
their configs: :mod:`safelab.commands.options`)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_data_options(p: argparse.ArgumentParser, *, kinds: bool = True) -> None:
    """Options shared by every command that reads contrast data."""
    if kinds:
        p.add_argument(
            "--kind",
            default="auto",
            choices=["auto", "statements", "replies", "pairs"],
            help="how to read the file (auto: .csv statements, .json/.jsonl pairs)",
        )
    p.add_argument(
        "--template",
        choices=["raw", "chat"],
        default=None,
        help="raw text or the chat template (default: raw for statements, chat for replies and pairs)",
    )
    p.add_argument(
        "--position",
        default=None,
        help="read position: last, mean or a token index (default: last; mean for replies)",
    )
    p.add_argument(
        "--limit",
        type=int,
        default=None,
        help="seeded random sample of this many rows (pairs for pair data)",
    )
    p.add_argument(
        "--model",
        default="default",
        help="model to load (default: the embedded SmolLM2-135M-Instruct)",
    )
    p.add_argument(
        "--sites", default="blocks.*.resid_post", help="sites to capture (glob, comma-separated)"
    )
    p.add_argument(
        "--cache",
        default=None,
        help="activation cache folder (default: $SAFELAB_CACHE/activations)",
    )
    p.add_argument("--batch-size", type=int, default=32, help="inputs per forward pass")
    p.add_argument("--seed", type=int, default=0, help="seed for sampling, splits and bootstrap")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples for intervals")


def load(args: argparse.Namespace, path: str) -> tuple[Any, Any]:
    """The model and the contrast data named on the command line."""
    from safelab.interp.contrast import load_contrast, parse_position
    from safelab.models.loading import load_model

    model = load_model(args.model)
    data = load_contrast(
        path,
        model,
        kind=getattr(args, "kind", "auto"),
        template=args.template,
        position=parse_position(args.position) if args.position else None,
        limit=args.limit,
        seed=args.seed,
    )
    return model, data


def activations(args: argparse.Namespace, model: Any, data: Any, sites: str | None = None) -> Any:
    from safelab.interp.actcache import cached_activations

    return cached_activations(
        model,
        data,
        sites or args.sites,
        cache_root=args.cache,
        batch_size=args.batch_size,
        progress=True,
    )


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    from safelab.files import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return path
