"""``safelab anchors``: which sentences of a reasoning trace decide the answer (thought anchors)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from safelab.anchors.run import AnchorsConfig
    from safelab.commands.options import add_options

    p = sub.add_parser(
        "anchors",
        help="thought anchors: resampling, counterfactual, forced-answer, receiver-head and "
        "suppression importance of each sentence of a reasoning trace",
    )
    p.add_argument(
        "prompt", nargs="*", help="a question: the model writes its trace, then it is analysed"
    )
    p.add_argument("--out", default="runs/anchors", help="output folder (rerun to resume)")
    add_options(p, AnchorsConfig, skip=("prompt",))
    p.add_argument(
        "--report-only",
        action="store_true",
        help="summarise the traces finished so far in --out (no model, no sampling)",
    )
    p.set_defaults(func=cmd_anchors)


def cmd_anchors(args: argparse.Namespace) -> int:
    from safelab.anchors.run import AnchorsConfig, report_only, run_anchors
    from safelab.commands.options import from_options

    cfg = from_options(AnchorsConfig, args, prompt=" ".join(args.prompt) if args.prompt else None)
    result = report_only(cfg, args.out) if args.report_only else run_anchors(cfg, args.out)
    s = result.metrics["summary"]
    for m, v in s.get("planted", {}).get("by_method", {}).items():
        t = v["top1"]
        print(f"planted {m:15s} mean rank {v['mean_rank']:.2f}  top-1 {t['k']}/{t['n']}")
    if "controls" in s:
        c = s["controls"]["false_anchor_rate"]
        print(f"controls false-anchor rate {c['k']}/{c['n']}")
    print(f"report: {result.report_path}")
    print(f"metrics: {result.metrics_path}")
    return 0
