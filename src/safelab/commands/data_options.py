"""Options and helpers shared by ``safelab probe``, ``steer`` and ``monitor``: the data and model
options, loading, the cached activations, the train/test split options, atomic JSON output."""

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
    from safelab.interp.contrast import check_data_file, load_contrast, parse_position
    from safelab.models.loading import load_model

    check_data_file(path)  # before the model load (seconds)
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
    from safelab.interp.artifacts import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")
    return path


def names_list(text: str | None) -> list[str] | None:
    return [v.strip() for v in text.split(",") if v.strip()] if text else None


def split_from_args(args: argparse.Namespace, data: Any) -> Any:
    """The train/test split the options ask for (printed in one line); see ``interp.splits``."""
    from safelab.interp.splits import make_split

    split = make_split(
        data,
        test_frac=args.test_frac,
        seed=args.seed,
        group=getattr(args, "group", None),
        domain=getattr(args, "domain", None),
        train_on=names_list(getattr(args, "train_on", None)),
        test_on=names_list(getattr(args, "test_on", None)),
    )
    print(split[2].line())
    return split


def add_split_options(p: argparse.ArgumentParser, *, domains: bool = True) -> None:
    """``--group`` (and ``--domain/--train-on/--test-on``): how rows are split."""
    p.add_argument(
        "--group",
        default=None,
        help="column whose rows stay on one side of the split (default: A/B pairs and detected "
        "near-duplicate statements are grouped; 'rows' for a plain row split)",
    )
    if domains:
        p.add_argument(
            "--domain", default=None, help="column naming each row's domain (for --test-on)"
        )
        p.add_argument(
            "--train-on", default=None, help="domains to train on (default: all but --test-on)"
        )
        p.add_argument("--test-on", default=None, help="domains to test on, comma-separated")
