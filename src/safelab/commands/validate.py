"""``safelab validate``: every detector against every organism and the base model, one matrix.

Parses the options, builds a :class:`~safelab.validate.config.ValidateConfig`, runs
:func:`~safelab.validate.run.run_validate` and prints the matrix; rerunning resumes.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    from safelab.commands.options import add_ray_option
    from safelab.judging import JUDGE_SCORINGS
    from safelab.validate.config import ValidateConfig

    d = ValidateConfig()  # the only defaults; None below means "the preset's value"
    p = subparsers.add_parser(
        "validate",
        help="every detector against every model organism and the base model (one matrix)",
    )
    p.add_argument("--out", default="runs/validate", help="run folder (rerun to resume)")
    p.add_argument("--model", default=d.model, help="the base model (the control column)")
    p.add_argument(
        "--organisms",
        default=None,
        help="comma-separated organism kinds to train or reuse (default: every kind known)",
    )
    p.add_argument(
        "--organism",
        action="append",
        default=[],
        help="an organism folder already trained on --model (repeatable)",
    )
    p.add_argument("--root", default=d.root, help="organism cache folder")
    p.add_argument("--preset", default=d.preset, help="quick (about 30 min cold) or full")
    p.add_argument("--n", type=int, default=None, help="samples per condition of each check")
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="samples per condition of the sampled (agentic) checks (quick 16, full 32)",
    )
    p.add_argument("--n-white-box", type=int, default=None, help="prompts per class (probe, SAE)")
    p.add_argument("--n-judge", type=int, default=None, help="transcripts per class (0: no judge)")
    p.add_argument(
        "--n-audit", type=int, default=None, help="audit seeds per organism (0: no audit row)"
    )
    p.add_argument("--judge", default=None, help="the judge model (default: --model)")
    p.add_argument(
        "--judge-scoring",
        choices=JUDGE_SCORINGS,
        default=None,
        help="the judge monitor's score: probability-weighted or the parsed SCORE line "
        f"(default: {d.judge_scoring})",
    )
    p.add_argument("--sae", default=None, help="an SAE on the base model: adds the SAE row")
    p.add_argument(
        "--detector", action="append", default=[], help="only this row (repeatable; default all)"
    )
    p.add_argument(
        "--all-cells",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="every check on every organism (full: yes; quick: the 64-item LM-written rows run "
        "on their own organism and the base only)",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    add_ray_option(p)  # each column's behavioural evaluations a Ray task
    p.add_argument(
        "--report-only", action="store_true", help="re-render report.html from metrics.json"
    )
    p.set_defaults(func=cmd_validate)


def cmd_validate(args: argparse.Namespace) -> int:
    from rich.console import Console

    from safelab.distributed import ray_address
    from safelab.errors import SafelabError
    from safelab.validate.config import ValidateConfig
    from safelab.validate.run import ValidationResult, format_matrix, run_validate

    out = Path(args.out)
    if args.report_only:
        from safelab.report.validate_report import write_validate_report

        path = out / "metrics.json"
        if not path.is_file():
            raise SafelabError(f"no {path}: run `safelab validate --out {out}` first")
        print(write_validate_report(ValidationResult.from_metrics(json.loads(path.read_text())),
                                    out / "report.html"))  # fmt: skip
        return 0
    kinds = tuple(k.strip() for k in (args.organisms or "").split(",") if k.strip())
    cfg = ValidateConfig.from_preset(
        args.preset,
        model=args.model,
        organisms=kinds,
        paths=tuple(args.organism),
        root=args.root,
        n=args.n,
        repeats=args.repeats,
        n_white_box=args.n_white_box,
        n_judge=args.n_judge,
        n_audit=args.n_audit,
        judge=args.judge,
        judge_scoring=args.judge_scoring,
        sae=args.sae,
        detectors=tuple(args.detector),
        all_cells=args.all_cells,
        seed=args.seed,
        threads=args.threads,
        ray=ray_address(args.ray),
    )
    console = Console()
    result = run_validate(
        cfg, out, say=lambda s: console.print(s, highlight=False, soft_wrap=True, markup=False)
    )
    print(format_matrix(result))
    print("verdicts: " + ", ".join(f"{k} {v}" for k, v in result.summary().items()))
    targets = result.targets()
    if targets:
        met = sum(t["met"] for t in targets)
        print(f"targets (each evaluation catches its own organism, quiet on the base): "
              f"{met} of {len(targets)} met")  # fmt: skip
        for t in targets:
            if not t["met"]:
                print(f"  missed: {t['row']}: {t['missed']}")
    print(f"report: {out / 'report.html'}")
    print(out / "metrics.json")
    return 0
