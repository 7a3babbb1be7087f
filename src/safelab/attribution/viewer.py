"""A self-contained HTML viewer of a pruned attribution graph (no network, no external files).

Features are drawn by layer (rows, embeddings at the bottom, the logit at the top) and position
(columns, the prompt's tokens along the bottom); edges by weight (width) and sign (blue excites,
red inhibits). Clicking a node lists its strongest incoming and outgoing edges and, for a
feature, its top-activating contexts from the transcoders' store. The graph data is embedded as
JSON and drawn by a small inline script; a static table of the top features is there without it.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any


def render_html(data: dict[str, Any]) -> str:
    template = resources.files("safelab.attribution").joinpath("viewer.html").read_text()
    meta = data["metadata"]
    extra = data.get("safelab", {})
    rows = []
    for f in extra.get("top_features", []):
        rows.append(
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{:.3f}</td><td>{:+.3f}</td><td>{}</td></tr>".format(
                html.escape(f["node_id"]),
                f["layer"],
                f["pos"],
                f["activation"],
                f["total_effect"],
                html.escape(" ".join(repr(t) for t in f["promotes"])),
            )
        )
    summary = (
        f"target {html.escape(repr(extra.get('target', '')))} p={extra.get('target_prob', 0):.3f}"
        f" · top prediction {html.escape(repr(extra.get('top_prediction', '')))}"
        f" · replacement score {extra.get('replacement_score', 0):.3f}"
        f" · completeness score {extra.get('completeness_score', 0):.3f}"
        f" · {extra.get('n_nodes_kept', 0)} nodes, {extra.get('n_edges_kept', 0)} edges kept"
        f" of {extra.get('n_features', 0)} features visited ({extra.get('n_active', 0)} active)"
    )
    payload = json.dumps(data).replace("</", "<\\/")
    return (
        template.replace("{{TITLE}}", html.escape(meta["prompt"]))
        .replace("{{SUMMARY}}", summary)
        .replace("{{ROWS}}", "\n".join(rows))
        .replace("{{DATA}}", payload)
    )
