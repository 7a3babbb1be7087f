"""The weak-to-strong report: one self-contained HTML page from a run's ``metrics.json``.

A PGR bar chart across tasks and losses (95% intervals over seeds and test items; undefined
PGRs drawn as a hatched placeholder and labelled), then a table per task and loss with weak,
student and ceiling accuracy and AUROC, PGR with both intervals, split sizes and flags. Needs
no model and no network.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from pathlib import Path
from typing import Any

from safelab.files import atomic_write_text
from safelab.report import plots

FLAG_AT_CHANCE = "weak_at_chance"
_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:1em 0;font-size:13px}"
    "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
    "th{background:#f3f3f3}td.l{text-align:left}.flag{color:#b00;font-weight:600}"
)


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _ci(ci: Any) -> str:
    return "n/a" if not ci else f"[{ci[0]:.2f}, {ci[1]:.2f}]"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def pgr_plot(metrics: dict[str, Any], path: Path) -> Path:
    """Bars of PGR per task (groups) and loss (colours) with 95% seeds+items intervals."""
    plt = plots._plt()
    tasks = list(metrics["tasks"])
    losses = list(metrics["config"]["losses"])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 * len(tasks) + 2), 4))
    width = 0.8 / max(1, len(losses))
    for j, loss in enumerate(losses):
        for i, name in enumerate(tasks):
            pgr = metrics["tasks"][name]["losses"][loss]["pgr"]
            x = i + (j - (len(losses) - 1) / 2) * width
            colour = f"C{j}"
            label = loss if i == 0 else None
            if pgr["value"] is None:
                ax.bar(
                    x, 0.05, width=width, color="white", edgecolor=colour, hatch="//", label=label
                )
                ax.text(x, 0.07, "undef.", ha="center", fontsize=7, rotation=90)
                continue
            v = pgr["value"]
            err = None
            if pgr["ci"]:
                err = [[v - pgr["ci"][0]], [pgr["ci"][1] - v]]
            ax.bar(x, v, width=width, color=colour, yerr=err, capsize=3, label=label)
            if FLAG_AT_CHANCE in metrics["tasks"][name]["flags"]:
                ax.text(x, max(v, 0) + 0.05, "weak≈chance", ha="center", fontsize=6, rotation=90)
    ax.axhline(0, color="grey", lw=0.8)
    ax.axhline(1, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(tasks)), tasks, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("PGR (95% CI: seeds + test items)")
    seeds = ",".join(str(s) for s in metrics["config"]["seeds"])
    ax.set_title(
        f"Performance gap recovered (weak: {metrics['config']['weak']}; seeds {seeds})", fontsize=10
    )
    ax.legend(fontsize=8)
    return plots._save(fig, path)


def _rows(metrics: dict[str, Any]) -> list[str]:
    rows = []
    for name, t in metrics["tasks"].items():
        weak = t["weak"]
        sizes = t["split_sizes"]
        for loss, r in t["losses"].items():
            pgr = r["pgr"]
            seeds = r["pgr_over_seeds"]
            flags = list(t["flags"])
            if pgr["value"] is None:
                pgr_txt = f"undefined: {html.escape(pgr['reason'])}"
            else:
                pgr_txt = f"{pgr['value']:.2f} {_ci(pgr['ci'])}"
                if pgr["ci"] is None:
                    pgr_txt += f" ({html.escape(pgr['reason'])})"
            cells = [
                f"<td class='l'>{html.escape(name)}</td>",
                f"<td class='l'>{html.escape(loss)}</td>",
                f"<td>{_pct(weak['accuracy'])} {_ci(weak['accuracy_ci'])}</td>",
                f"<td>{_pct(_mean(r['student_accuracy']))}</td>",
                f"<td>{_pct(_mean(r['ceiling_accuracy']))}</td>",
                f"<td>{_pct(weak['auroc'])} / {_pct(_mean(r['student_auroc']))} / "
                f"{_pct(_mean(r['ceiling_auroc']))}</td>",
                f"<td>{pgr_txt}</td>",
                f"<td>{_pct(seeds.get('mean'))} {_ci(seeds.get('ci'))}</td>",
                f"<td>{sizes['weak_train']}/{sizes['strong_train']}/{sizes['test']}</td>",
                f"<td class='l flag'>{html.escape(', '.join(flags))}</td>",
            ]
            rows.append("<tr>" + "".join(cells) + "</tr>")
    return rows


def render_w2s_report(metrics: dict[str, Any]) -> str:
    """The page as a string (the plot inlined as base64 PNG)."""
    with tempfile.TemporaryDirectory() as tmp:
        png = pgr_plot(metrics, Path(tmp) / "pgr.png")
        b64 = base64.b64encode(png.read_bytes()).decode()
    cfg = metrics["config"]
    head = (
        "<tr><th>task</th><th>loss</th><th>weak acc [95% CI]</th><th>student acc (mean)</th>"
        "<th>ceiling acc (mean)</th><th>AUROC weak / student / ceiling</th>"
        "<th>PGR [95% CI seeds+items]</th><th>PGR mean over seeds [95% CI]</th>"
        "<th>split weak/strong/test</th><th>flags</th></tr>"
    )
    desc = (
        f"Weak supervisor <b>{html.escape(cfg['weak'])}</b>, strong student "
        f"<b>{html.escape(cfg['student'])}</b> (linear head, {html.escape(cfg['position'])} token), "
        f"seeds {html.escape(', '.join(str(s) for s in cfg['seeds']))}, "
        f"{cfg['n_resamples']} bootstrap resamples. PGR = (student - weak) / (ceiling - weak) "
        "on test accuracy; undefined when the ceiling is not above the weak supervisor."
    )
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        "<title>safelab w2s: weak-to-strong generalisation</title>",
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Weak-to-strong generalisation</h1>",
        f"<p>{desc}</p>",
        f"<p><img alt='PGR by task and loss' src='data:image/png;base64,{b64}'></p>",
        f"<table id='pgr'>{head}{''.join(_rows(metrics))}</table>",
        "<p>Flags: <code>weak_at_chance</code>: the weak supervisor's test AUROC interval "
        "includes 0.5; <code>no_gap</code>: the ceiling is not above the weak supervisor.</p>",
        "<h2>config</h2><pre>" + html.escape(json.dumps(cfg, indent=2)) + "</pre>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def write_w2s_report(metrics: dict[str, Any], path: str | Path) -> Path:
    """Write the page atomically; returns its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, render_w2s_report(metrics))
    return path
