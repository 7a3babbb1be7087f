"""Plots for probes, steering and monitors (PNG via matplotlib's Agg backend) and an HTML page.

Each function takes plain numbers (no model objects), writes one PNG and returns its path.
"""

from __future__ import annotations

import base64
import html
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from safelab.files import atomic_write_text


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _layer(site: str) -> int:
    m = re.search(r"blocks\.(\d+)\.", site)
    return int(m.group(1)) if m else -1


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _plt().close(fig)
    return path


def auroc_by_layer(
    curves: Mapping[str, Mapping[str, tuple[float, Sequence[float]]]],
    path: str | Path,
    title: str = "Probe AUROC by layer (held out)",
) -> Path:
    """``curves[label][site] = (auroc, [lo, hi])``: one line with an interval band per label."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, sites in curves.items():
        items = sorted(sites.items(), key=lambda kv: _layer(kv[0]))
        xs = [_layer(s) for s, _ in items]
        ys = [v[0] for _, v in items]
        ax.plot(xs, ys, marker="o", ms=3, label=label)
        ax.fill_between(xs, [v[1][0] for _, v in items], [v[1][1] for _, v in items], alpha=0.2)
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("layer (resid_post)")
    ax.set_ylabel("AUROC (95% CI)")
    lows = [v[1][0] for sites in curves.values() for v in sites.values()]
    ax.set_ylim(min([0.3, *lows]) - 0.02, 1.01)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _save(fig, path)


def roc_curves(
    curves: Mapping[str, tuple[Sequence[float], Sequence[float], float]],
    path: str | Path,
    title: str = "ROC",
) -> Path:
    """``curves[name] = (fpr, tpr, auroc)``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    for name, (fpr, tpr, au) in curves.items():
        ax.plot(fpr, tpr, label=f"{name} (AUROC {au:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
    ax.axvline(0.01, color="red", lw=0.6, ls=":")
    ax.set_xlabel("false-positive rate")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def heatmap(
    values: Sequence[Sequence[float]],
    names: Sequence[str],
    path: str | Path,
    title: str = "Generalisation (AUROC): train on row, test on column",
) -> Path:
    plt = _plt()
    n = len(names)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * n, 0.8 + 0.7 * n))
    im = ax.imshow(values, vmin=0.0, vmax=1.0, cmap="RdYlGn")
    ax.set_xticks(range(n), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{values[i][j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_xlabel("test")
    ax.set_ylabel("train")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, path)


def steering_curves(
    cells: Sequence[Mapping[str, Any]],
    path: str | Path,
    title: str = "Steering: Δp(behaviour) on held-out pairs",
) -> Path:
    """``cells``: dicts with site, scale, delta, delta_ci; Δp by layer, one line per scale."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    scales = sorted({float(c["scale"]) for c in cells if float(c["scale"]) != 0})
    for scale in scales:
        row = sorted(
            (c for c in cells if float(c["scale"]) == scale), key=lambda c: _layer(c["site"])
        )
        xs = [_layer(c["site"]) for c in row]
        ys = [c["delta"] for c in row]
        err = [
            [c["delta"] - c["delta_ci"][0] for c in row],
            [c["delta_ci"][1] - c["delta"] for c in row],
        ]
        ax.errorbar(xs, ys, yerr=err, marker="o", ms=3, capsize=2, label=f"scale {scale:+g}")
    ax.axhline(0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("layer (resid_post)")
    ax.set_ylabel("Δ p(matching answer) (95% CI)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def write_html(
    path: str | Path,
    title: str,
    images: Sequence[Path],
    metrics: Mapping[str, Any],
    warnings: Sequence[str] = (),
) -> Path:
    """One self-contained page: warnings first (in red), the images (inlined), the metrics."""
    parts = [
        f"<!doctype html><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    parts += [
        f"<p style='color:#b00;font-weight:bold'>WARNING: {html.escape(w)}</p>" for w in warnings
    ]
    for img in images:
        data = base64.b64encode(Path(img).read_bytes()).decode()
        parts.append(
            f"<p><img alt='{html.escape(Path(img).name)}' src='data:image/png;base64,{data}'></p>"
        )
    parts.append(
        "<h2>metrics</h2><pre>" + html.escape(json.dumps(metrics, indent=2)[:200_000]) + "</pre>"
    )
    path = Path(path)
    atomic_write_text(path, "\n".join(parts) + "\n")
    return path
