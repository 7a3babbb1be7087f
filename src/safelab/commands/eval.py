"""``safelab eval``: run the behavioural suite on a model, or tabulate existing logs."""

from __future__ import annotations

import argparse
from typing import Any

from safelab.errors import SafelabError


def _parse_args(items: list[str], flag: str) -> dict[str, Any]:
    """``name=value`` pairs; values are read as YAML scalars (``8`` is an int, ``a,b`` a string)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise SafelabError(f"{flag} {item}: use {flag} name=value")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value) if value else value
    return out


def _run(args: argparse.Namespace) -> int:
    if args.from_logs:
        from safelab.evals.results import markdown_table, read_log, summarise_log

        rows = [
            row for path in args.from_logs for row in summarise_log(read_log(path), seed=args.seed)
        ]
        print(markdown_table(rows), end="")
        return 0
    if not args.model:
        raise SafelabError(
            "--model is required (e.g. --model safelab/default), or pass --from-logs"
        )
    from safelab.evals.suite import SuiteConfig, run_suite

    config = SuiteConfig(
        model=args.model,
        judge=args.judge,
        preset=args.preset,
        tasks=[t.strip() for t in args.tasks.split(",")] if args.tasks else None,
        limit=args.limit,
        out=args.out,
        seed=args.seed,
        max_samples=args.max_samples,
        retry_attempts=args.retries,
        model_args=_parse_args(args.model_arg, "-M"),
        task_args=_parse_args(args.task_arg, "-T"),
    )
    results = run_suite(config, display=args.display)
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
    p.add_argument(
        "--model", default=None, help="Inspect model, e.g. safelab/default or openai/gpt-4o"
    )
    p.add_argument(
        "--judge", default=None, help="model for the judge role (default: the model itself)"
    )
    p.add_argument("--preset", default="quick", help="quick, full, or a suite YAML file")
    p.add_argument("--tasks", default=None, help="comma-separated task names or labels to run")
    p.add_argument(
        "--limit", type=int, default=None, help="samples per task (overrides the preset)"
    )
    p.add_argument("--out", default="runs/evals", help="folder for results.md, results.json, logs/")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--max-samples", type=int, default=None, help="samples run concurrently")
    p.add_argument(
        "--retries",
        type=int,
        default=0,
        help="retries of a failed task within this run; rerunning the command also resumes "
        "(finished tasks skipped, finished samples kept)",
    )
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
    p.add_argument("--display", default="plain", help="Inspect display: plain, rich, none")
    p.add_argument(
        "--from-logs", nargs="+", default=None, help="tabulate existing Inspect logs instead"
    )
    p.set_defaults(func=_run)
