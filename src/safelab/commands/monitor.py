"""``safelab monitor report``: each monitor's ROC, AUROC and recall at 1% FPR from an Inspect log."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _report(args: argparse.Namespace) -> int:
    from safelab.commands.data_options import write_json
    from safelab.monitors.roc import format_report, monitor_report
    from safelab.report import plots

    report = monitor_report(
        args.log,
        args.label,
        base_log=args.base_log,
        positive=args.positive,
        monitors=args.monitor,
        flip=args.flip,
        n_resamples=args.resamples,
        seed=args.seed,
    )
    print(format_report(report))
    if args.out:
        out = Path(args.out)
        payload = report.to_dict()
        write_json(out / "metrics.json", payload)
        curves = {
            name: (r.roc["fpr"], r.roc["tpr"], r.auroc)
            for name, r in report.monitors.items()
            if r.auroc is not None
        }
        images = (
            [
                plots.roc_curves(
                    curves, out / "roc.png", title=f"monitors vs metadata[{args.label!r}]"
                )
            ]
            if curves
            else []
        )
        plots.write_html(out / "report.html", "monitor report", images, payload)
        print(f"wrote {out / 'metrics.json'}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``safelab monitor report``."""
    parser = subparsers.add_parser(
        "monitor", help="score monitors (probe, judge) against ground truth in an Inspect log"
    )
    sub = parser.add_subparsers(dest="monitor_command", required=True)
    rep = sub.add_parser("report", help="ROC, AUROC and recall@1%%FPR per monitor, side by side")
    rep.add_argument("log", help="Inspect log (.eval or .json)")
    rep.add_argument(
        "--label", default="label", help="sample metadata key holding the ground truth"
    )
    rep.add_argument(
        "--positive",
        default=None,
        help="label value that counts as positive (default: 1/true/deceptive/unsafe)",
    )
    rep.add_argument(
        "--monitor",
        action="append",
        default=None,
        help="scorer to include (repeatable; default all)",
    )
    rep.add_argument(
        "--flip",
        action="append",
        default=None,
        help="scorer whose low values are suspicious (repeatable)",
    )
    rep.add_argument(
        "--base-log",
        default=None,
        help="the same eval on the base model (same sample ids): each monitor's base control "
        "(base AUROC, gain over it with 95%% CI, reads_input_not_behaviour)",
    )
    rep.add_argument("--resamples", type=int, default=1000)
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--out", default=None, help="folder for metrics.json, roc.png and report.html")
    rep.set_defaults(func=_report)
