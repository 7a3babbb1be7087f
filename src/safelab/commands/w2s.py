"""``safelab w2s``: weak-to-strong generalisation, PGR with intervals, plain vs auxiliary loss."""

from __future__ import annotations

import argparse
from pathlib import Path

from safelab.errors import SafelabError


def _ints(value: str) -> list[int]:
    try:
        return [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise SafelabError(
            f"--seeds {value!r}: give comma-separated integers, e.g. 0,1,2"
        ) from None


def _names(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from safelab.w2s.run import W2SConfig
    from safelab.w2s.tasks import BUILTIN_TASKS

    # Every default below is read from the config, the only place that holds them.
    d = W2SConfig(tasks=["-"])

    p = sub.add_parser(
        "w2s",
        help="weak-to-strong generalisation: a weak supervisor labels data, the strong model "
        "learns from it; PGR with 95%% intervals",
    )
    p.add_argument(
        "--task",
        default=None,
        help=f"comma-separated tasks: {', '.join(BUILTIN_TASKS)}, hub:sciq|boolq|anthropic_hh "
        "(needs `datasets`), or a text,label CSV/JSONL",
    )
    p.add_argument("--weak", default=d.weak, help="weak supervisor: bow, probe or probe:<site>")
    p.add_argument("--student", default=d.student, help="the strong model (default: SmolLM2-135M)")
    p.add_argument("--site", default=d.site, help="student feature site (auto: 70%% depth)")
    p.add_argument("--position", default=d.position, choices=["last", "mean"])
    p.add_argument("--loss", default=",".join(d.losses), help="comma-separated: xent, aux")
    p.add_argument(
        "--seeds", default=",".join(map(str, d.seeds)), help="training seeds (splits are fixed)"
    )
    p.add_argument("--max-rows", type=int, default=d.max_rows, help="rows per task (seeded)")
    p.add_argument(
        "--aux-coef", type=float, default=d.aux_coef, help="final weight of the aux term"
    )
    p.add_argument(
        "--warmup-frac", type=float, default=d.warmup_frac, help="aux weight warm-up share"
    )
    p.add_argument("--epochs", type=int, default=d.student_cfg.epochs)
    p.add_argument("--lr", type=float, default=d.student_cfg.lr)
    p.add_argument(
        "--lora",
        action="store_true",
        help="student and ceiling fine-tune the model with LoRA (peft) + a head: GPU-sized work",
    )
    p.add_argument("--resamples", type=int, default=d.n_resamples, help="bootstrap resamples")
    p.add_argument("--data-root", default=None, help="shared data folder (default ../shared/data)")
    p.add_argument("--cache", default=None, help="activation cache (default $SAFELAB_CACHE)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="inputs per forward pass")
    p.add_argument("--out", default="runs/w2s", help="output folder (rerun to resume)")
    p.add_argument(
        "--report-only", action="store_true", help="re-render report.html from metrics.json"
    )
    p.set_defaults(func=cmd_w2s)


def cmd_w2s(args: argparse.Namespace) -> int:
    import json

    from safelab.w2s.report import write_w2s_report
    from safelab.w2s.run import W2SConfig, run_experiment
    from safelab.w2s.student import StudentConfig

    out = Path(args.out)
    if args.report_only:
        path = out / "metrics.json"
        if not path.is_file():
            raise SafelabError(f"{path} not found: run `safelab w2s` without --report-only first")
        report = write_w2s_report(json.loads(path.read_text()), out / "report.html")
        print(f"report: {report}")
        return 0
    if not args.task:
        raise SafelabError("no task: give --task (e.g. truth-cities,lie-detector)")
    cfg = W2SConfig(
        tasks=_names(args.task),
        weak=args.weak,
        student=args.student,
        site=args.site,
        position=args.position,
        losses=_names(args.loss),
        seeds=_ints(args.seeds),
        max_rows=args.max_rows,
        aux_coef=args.aux_coef,
        warmup_frac=args.warmup_frac,
        student_cfg=StudentConfig(epochs=args.epochs, lr=args.lr),
        lora=args.lora,
        n_resamples=args.resamples,
        data_root=args.data_root,
        cache=args.cache,
        batch_size=args.batch_size,
    )
    summary = run_experiment(cfg, out)
    for name, t in summary.metrics["tasks"].items():
        flags = f"  [{', '.join(t['flags'])}]" if t["flags"] else ""
        print(f"{name}: weak acc {t['weak']['accuracy']:.3f}{flags}")
        for loss, r in t["losses"].items():
            from safelab.w2s.pgr import PerformanceGapRecovered

            pgr = PerformanceGapRecovered(**{k: v for k, v in r["pgr"].items() if k != "defined"})
            student = sum(r["student_accuracy"]) / len(r["student_accuracy"])
            ceiling = sum(r["ceiling_accuracy"]) / len(r["ceiling_accuracy"])
            print(f"  {loss:5s} student {student:.3f}  ceiling {ceiling:.3f}  PGR {pgr}")
    report = write_w2s_report(summary.metrics, out / "report.html")
    print(
        f"cells: {summary.computed} computed, {summary.reused} reused; "
        f"metrics: {summary.path}; report: {report}"
    )
    return 0
