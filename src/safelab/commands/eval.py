"""``safelab eval``: run the behavioural suite on a model, or tabulate existing logs."""

from __future__ import annotations

import argparse
from typing import Any


def _run(args: argparse.Namespace) -> int:
    if args.from_logs:
        from safelab.evals.results import markdown_table, read_log, summarise_log

        rows = [
            row for path in args.from_logs for row in summarise_log(read_log(path), seed=args.seed)
        ]
        print(markdown_table(rows), end="")
        return 0
    from safelab.commands.options import from_options
    from safelab.evals.suite import SuiteConfig, parse_name_values, run_suite

    config = from_options(
        SuiteConfig,
        args,
        model_args=parse_name_values(args.model_arg, "-M"),
        task_args=parse_name_values(args.task_arg, "-T"),
    )
    results = run_suite(config)
    print(f"{args.out}/results.md")
    print(f"{args.out}/results.json")
    print(f"{len(results.rows)} rows; judge calls: {results.judge['judge_calls']}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``safelab eval``."""
    p = subparsers.add_parser(
        "eval",
        help="run the behavioural suite (Inspect tasks) on a model and write a results table",
    )
    from safelab.commands.options import add_options
    from safelab.evals.suite import SuiteConfig

    add_options(p, SuiteConfig, skip=("model_args", "task_args"))
    p.add_argument(
        "-M", "--model-arg", action="append", default=[], help="model argument name=value"
    )
    p.add_argument(
        "-T",
        "--task-arg",
        action="append",
        default=[],
        help="task argument name=value, for every task run",
    )
    p.add_argument(
        "--from-logs", nargs="+", default=None, help="tabulate existing Inspect logs instead"
    )
    p.set_defaults(func=_run)
