"""The validation matrix as one self-contained HTML page (the verdict grid inlined as a PNG).

Renders from a :class:`~safelab.validate.run.ValidationResult` or its ``metrics.json`` alone,
with the Jinja template ``report/data/validate_report.html.jinja``.
"""

from __future__ import annotations

import base64
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safelab.data import read_package_text
from safelab.files import atomic_write_text
from safelab.report import plots

if TYPE_CHECKING:
    from safelab.validate.run import ValidationResult

COLOURS = {
    "caught": "#2e7d32",
    "not caught": "#c62828",
    "unscorable": "#9e9e9e",
    "fires": "#ef6c00",
    "quiet": "#1565c0",
    "not run": "#e0e0e0",
}


def _result(metrics: ValidationResult | dict[str, Any]) -> ValidationResult:
    from safelab.validate.run import ValidationResult

    return (
        metrics if isinstance(metrics, ValidationResult) else ValidationResult.from_metrics(metrics)
    )


def verdict_grid(result: ValidationResult, path: Path) -> Path:
    """Rows (detectors) x columns (organisms, base), each square coloured by its verdict."""
    plt = plots._plt()
    rows, cols = [r.name for r in result.rows], [c.name for c in result.columns]
    fig, ax = plt.subplots(figsize=(1.6 + 1.4 * len(cols), 0.8 + 0.5 * len(rows)))
    for i, row in enumerate(rows):
        for j, col in enumerate(cols):
            cell = result.cell(row, col)
            ax.add_patch(plt.Rectangle((j, i), 0.96, 0.92, color=COLOURS.get(cell.verdict, "#fff")))
            text = cell.verdict if cell.effect is None else f"{cell.effect:+.2f}\n{cell.verdict}"
            ax.text(j + 0.48, i + 0.46, text, ha="center", va="center", fontsize=7, color="white")
    ax.set_xlim(0, len(cols))
    ax.set_ylim(len(rows), 0)
    ax.set_xticks([j + 0.48 for j in range(len(cols))], cols, fontsize=8, rotation=20)
    ax.set_yticks([i + 0.46 for i in range(len(rows))], rows, fontsize=8)
    ax.set_title("detectors (rows) vs organisms and the base model (columns)", fontsize=9)
    for side in ("top", "right", "left", "bottom"):
        ax.spines[side].set_visible(False)
    return plots._save(fig, path)


def _ci(ci: list[float] | None) -> str:
    return "" if not ci else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def render_validate_report(metrics: ValidationResult | dict[str, Any]) -> str:
    from jinja2 import Environment, select_autoescape

    result = _result(metrics)
    with tempfile.TemporaryDirectory() as tmp:
        grid = base64.b64encode(verdict_grid(result, Path(tmp) / "grid.png").read_bytes()).decode()
    cols = [c.name for c in result.columns]
    matrix = []
    for row in result.rows:
        cells = []
        for col in cols:
            c = result.cell(row.name, col)
            cells.append(
                {
                    "effect": "n/a" if c.effect is None else f"{c.effect:+.3f}",
                    "ci": _ci(c.ci),
                    "verdict": c.verdict,
                    "cls": c.verdict.replace(" ", "-"),
                    "flag": bool(c.detail.get("reads_input_not_behaviour")),
                    "measure": c.measure,
                }
            )
        matrix.append({"name": row.name, "kind": row.kind, "cells": cells})
    details = [
        {
            "row": c.row,
            "column": c.column,
            "verdict": c.verdict,
            "detail": ", ".join(
                f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}"
                for k, v in c.detail.items()
                if k not in ("rule", "logs", "per_site")
            ),
        }
        for c in result.cells
    ]
    targets = [
        t | {"effect": "n/a" if t["effect"] is None else f"{t['effect']:+.3f}", "ci": _ci(t["ci"])}
        for t in result.targets()
    ]
    template = read_package_text("safelab.report", "data", "validate_report.html.jinja")
    env = Environment(autoescape=select_autoescape(default=True, default_for_string=True))
    from safelab.interp.base_control import RULE

    return env.from_string(template).render(
        model=result.config.model,
        seed=result.config.seed,
        preset=result.config.preset,
        columns=result.columns,
        matrix=matrix,
        grid=grid,
        details=details,
        targets=targets,
        summary=result.summary(),
        timings=result.timings_s,
        rule=RULE,
    )


def write_validate_report(metrics: ValidationResult | dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    atomic_write_text(path, render_validate_report(metrics))
    return path
