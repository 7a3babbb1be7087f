"""``safelab audit``: view one audit as HTML, or summarise an audit log."""

from __future__ import annotations

import argparse
import json
from typing import Any


def _view(args: argparse.Namespace) -> int:
    from safelab.audit.view import write_audit_html

    out = write_audit_html(args.log, args.out, sample=args.sample, sample_id=args.id)
    print(out)
    return 0


def _summary(args: argparse.Namespace) -> int:
    from safelab.audit.summary import format_summary, summarise_log

    summary = summarise_log(
        args.log, n_resamples=args.resamples, confidence=args.confidence, seed=args.seed
    )
    if args.json:
        print(json.dumps(summary.to_dict(), indent=2, allow_nan=True))
    else:
        print(format_summary(summary))
    return 0


def register(subparsers: Any) -> None:
    """Add ``safelab audit view`` and ``safelab audit summary``."""
    parser = subparsers.add_parser(
        "audit", help="inspect results of the safelab/audit task (HTML view, summary)"
    )
    sub = parser.add_subparsers(dest="audit_command", required=True)

    view = sub.add_parser("view", help="render one audit (all branches, judge highlights) to HTML")
    view.add_argument("log", help="Inspect log written by `inspect eval safelab/audit`")
    view.add_argument(
        "--sample", type=int, default=None, help="1-based position of the audit (default 1)"
    )
    view.add_argument("--id", default=None, help="sample id (seed id) instead of --sample")
    view.add_argument("--out", required=True, help="HTML file to write")
    view.set_defaults(func=_view)

    summ = sub.add_parser(
        "summary", help="per-dimension means with bootstrap intervals across seeds"
    )
    summ.add_argument("log", help="Inspect log written by `inspect eval safelab/audit`")
    summ.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples")
    summ.add_argument("--confidence", type=float, default=0.95, help="interval confidence")
    summ.add_argument("--seed", type=int, default=0, help="bootstrap random seed")
    summ.add_argument("--json", action="store_true", help="print JSON instead of a table")
    summ.set_defaults(func=_summary)
