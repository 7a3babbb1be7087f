"""``safelab monitor report``: each monitor's ROC, AUROC and recall at 1% FPR from an Inspect log."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _report(args: argparse.Namespace) -> int:
    from safelab.commands.options import from_options
    from safelab.monitors.run import MonitorReportConfig, run_monitor_report

    result = run_monitor_report(from_options(MonitorReportConfig, args), args.out)
    print(result.summary())
    if args.out:
        print(f"wrote {Path(args.out) / 'metrics.json'}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``safelab monitor report``."""
    from safelab.commands.options import add_options
    from safelab.monitors.run import MonitorReportConfig

    parser = subparsers.add_parser(
        "monitor", help="score monitors (probe, judge) against ground truth in an Inspect log"
    )
    sub = parser.add_subparsers(dest="monitor_command", required=True)
    rep = sub.add_parser("report", help="ROC, AUROC and recall@1%%FPR per monitor, side by side")
    rep.add_argument("log", help="Inspect log (.eval or .json)")
    add_options(rep, MonitorReportConfig, skip=("log",))
    rep.add_argument("--out", default=None, help="folder for metrics.json, roc.png and report.html")
    rep.set_defaults(func=_report)
