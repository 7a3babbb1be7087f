"""``safelab eval``: run the behavioural suite on a model, or tabulate existing logs."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from safelab.errors import SafelabError


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
    if args.organism:
        from safelab.distributed import ray_address
        from safelab.evals.suite import organism_models, run_suites

        models = organism_models(config.model, args.organism)
        payload = run_suites(config, models, ray=ray_address(args.ray))
        for model, r in payload["suites"].items():
            print(f"{model}: {len(r['rows'])} rows -> {Path(r['config']['out']) / 'results.md'}")
        print(f"{Path(config.out) / 'suites.json'}")
        return 0
    if args.ray:
        raise SafelabError("--ray needs a grid: give --organism FOLDER (repeatable)")
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
    p.add_argument(
        "--organism",
        action="append",
        default=[],
        help="also run the suite on this organism folder (repeatable): one suite per model, "
        "the base (--model) and each organism on it, a grid that --ray spreads",
    )
    from safelab.commands.options import add_ray_option

    add_ray_option(p)
    p.set_defaults(func=_run)
