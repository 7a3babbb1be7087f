"""``safelab w2s``: weak-to-strong generalisation, PGR with intervals, plain vs auxiliary loss."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from safelab.errors import SafelabError

if TYPE_CHECKING:
    from safelab.w2s.run import W2SConfig

NESTED = ("student_cfg", "lora_cfg")
"""W2SConfig fields set through their own options (``--epochs``, ``--lr``)."""


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from safelab.commands.options import add_options, add_ray_option
    from safelab.w2s.run import W2SConfig
    from safelab.w2s.student import StudentConfig

    d = StudentConfig()  # the head's defaults are its config's
    p = sub.add_parser(
        "w2s",
        help="weak-to-strong generalisation: a weak supervisor labels data, the strong model "
        "learns from it; PGR with 95%% intervals",
    )
    add_options(p, W2SConfig, skip=NESTED)
    p.add_argument("--epochs", type=int, default=d.epochs, help="student head epochs")
    p.add_argument("--lr", type=float, default=d.lr, help="student head learning rate")
    p.add_argument("--out", default="runs/w2s", help="output folder (rerun to resume)")
    p.add_argument(
        "--report-only", action="store_true", help="re-render report.html from metrics.json"
    )
    add_ray_option(p)
    p.set_defaults(func=cmd_w2s)


def config_from_args(args: argparse.Namespace) -> W2SConfig:
    """The run's config from the parsed options (the head's from ``--epochs`` / ``--lr``)."""
    from safelab.commands.options import from_options
    from safelab.w2s.run import W2SConfig
    from safelab.w2s.student import StudentConfig

    return from_options(W2SConfig, args, student_cfg=StudentConfig(epochs=args.epochs, lr=args.lr))


def cmd_w2s(args: argparse.Namespace) -> int:
    import json

    from safelab.distributed import ray_address
    from safelab.w2s.report import write_w2s_report
    from safelab.w2s.run import run_experiment

    out = Path(args.out)
    if args.report_only:
        path = out / "metrics.json"
        if not path.is_file():
            raise SafelabError(f"{path} not found: run `safelab w2s` without --report-only first")
        report = write_w2s_report(json.loads(path.read_text()), out / "report.html")
        print(f"report: {report}")
        return 0
    summary = run_experiment(config_from_args(args), out, ray=ray_address(args.ray))
    for line in summary.summary_lines():
        print(line)
    report = summary.write_report()
    print(
        f"cells: {summary.computed} computed, {summary.reused} reused; "
        f"metrics: {summary.path}; report: {report}"
    )
    return 0
