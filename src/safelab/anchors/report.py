"""A self-contained HTML view of an anchors run: no scripts, no external files.

Per trace: the sentences shaded by importance under each method (value and 95% interval in
the tooltip and the table), the answer distribution of the rollouts from each prefix (stacked
bars), and the receiver-head attention and suppression maps as shaded tables.
"""

from __future__ import annotations

import html
import math
from pathlib import Path
from typing import Any

from safelab.anchors.analyse import METHODS
from safelab.files import atomic_write_text

COLOURS = ["#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb"]
CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;max-width:1100px;color:#222}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:2em;border-top:1px solid #ccc;padding-top:.8em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:2px 6px;font-size:.85em}
.sent{padding:1px 2px;border-radius:3px}.planted{outline:2px solid #228833}
.bar{display:flex;height:14px;width:320px;border:1px solid #999}.bar div{height:100%}
.map td{width:26px;height:22px;text-align:center;font-size:.7em}.small{color:#666;font-size:.85em}
"""


def _num(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return f"{v:.{digits}f}"


def _ci(e: dict[str, Any]) -> str:
    if e.get("lo") is None:
        return _num(e.get("value"))
    return f"{_num(e['value'])} [{_num(e['lo'])}, {_num(e['hi'])}]"


def _shade(value: float | None, top: float, rgb: str = "238,102,119") -> str:
    a = 0.0 if value is None or top <= 0 else max(0.0, min(1.0, value / top))
    return f"background:rgba({rgb},{a:.2f})"


def _trace_html(r: dict[str, Any]) -> str:
    esc = html.escape
    methods = [m for m in METHODS if m in r]
    parts = [
        f"<h2 id='{esc(r['id'])}'>{esc(r['id'])} <span class='small'>({esc(r['kind'])})</span></h2>"
    ]
    parts.append(f"<p><b>Question.</b> {esc(r['question'])}</p>")
    parts.append(
        f"<p><b>Answer in trace:</b> {esc(str(r['answer']))}"
        + (f" &middot; <b>correct:</b> {esc(str(r['correct']))}" if r.get("correct") else "")
        + (
            f" &middot; <b>planted sentence:</b> {r['planted']}"
            if r.get("planted") is not None
            else ""
        )
        + f" &middot; <b>anchors (rule):</b> {r['anchors'] or 'none'}</p>"
    )
    for m in methods:
        vals = [e["value"] for e in r[m]]
        top = max([v for v in vals if v is not None] or [0.0])
        spans = []
        for i, (s, e) in enumerate(zip(r["sentences"], r[m], strict=True)):
            cls = "sent planted" if r.get("planted") == i else "sent"
            spans.append(
                f"<span class='{cls}' style='{_shade(e['value'], top)}' title='{i}: {esc(_ci(e))}'>"
                f"{esc(s)}</span>"
            )
        parts.append(f"<p><b>{m}</b>: {' '.join(spans)}</p>")
    head = "".join(f"<th>{m}</th>" for m in methods)
    rows = []
    for i, s in enumerate(r["sentences"]):
        cells = "".join(f"<td>{esc(_ci(r[m][i]))}</td>" for m in methods)
        ranks = " ".join(str(r["ranks"][m][i]) for m in methods)
        rows.append(f"<tr><td>{i}</td><td>{esc(s[:70])}</td>{cells}<td>{ranks}</td></tr>")
    parts.append(
        f"<table><tr><th>#</th><th>sentence</th>{head}<th>ranks</th></tr>{''.join(rows)}</table>"
    )
    cats = r["categories"]
    legend = " ".join(
        f"<span style='color:{COLOURS[i % len(COLOURS)]}'>&#9632; {esc(c)}</span>"
        for i, c in enumerate(cats)
    )
    bars = []
    for p in r["prefixes"]:
        n = max(1, sum(p["counts"].values()))
        segs = "".join(
            f"<div style='width:{100 * p['counts'][c] / n:.1f}%;background:{COLOURS[i % len(COLOURS)]}'></div>"
            for i, c in enumerate(cats)
        )
        forced = ", ".join(f"{esc(c)} {p['forced'][c]:.2f}" for c in cats)
        bars.append(
            f"<tr><td>before {p['k']}</td><td><div class='bar'>{segs}</div></td>"
            f"<td>{sum(p['counts'].values())}/{p['rollouts']} scorable ({p['unscorable']} unscorable)</td>"
            f"<td class='small'>forced: {forced}</td></tr>"
        )
    parts.append(
        f"<p><b>Answer distribution per prefix</b> {legend}</p><table>{''.join(bars)}</table>"
    )
    for name, key, rgb in (
        ("Receiver-head attention (query row, key column)", "receiver_attention", "68,119,170"),
        ("Suppression KL (suppressed row, affected column)", "suppression_matrix", "238,102,119"),
    ):
        if key not in r:
            continue
        mat = r[key]
        top = max((v for row in mat for v in row), default=0.0)
        labels = [str(i) for i in range(len(r["sentences"]))] + ["ans"]
        head = "".join(f"<th>{c}</th>" for c in labels[: len(mat[0])])
        body = "".join(
            f"<tr><th>{labels[i]}</th>"
            + "".join(
                f"<td style='{_shade(v, top, rgb)}' title='{v:.4f}'>{v:.2f}</td>" for v in row
            )
            + "</tr>"
            for i, row in enumerate(mat)
        )
        parts.append(
            f"<p><b>{name}</b></p><table class='map'><tr><th></th>{head}</tr>{body}</table>"
        )
    return "\n".join(parts)


def _summary_html(m: dict[str, Any]) -> str:
    esc = html.escape
    s = m["summary"]
    out = [
        f"<p>model <b>{esc(m['model'])}</b>, embedder <b>{esc(m['embedder'])}</b>, "
        f"{m['config']['rollouts']} rollouts per prefix, seed {s['seed']}. "
        f"Anchor rule: {esc(m['anchor_rule'])}.</p>"
    ]
    if "planted" in s:
        p = s["planted"]
        rows = "".join(
            f"<tr><td>{k}</td><td>{_num(v['mean_rank'], 2)} [{_num(v['mean_rank_ci'][0], 2)}, "
            f"{_num(v['mean_rank_ci'][1], 2)}]</td><td>{v['top1']['k']}/{v['top1']['n']} "
            f"[{_num(v['top1']['ci'][0], 2)}, {_num(v['top1']['ci'][1], 2)}]</td></tr>"
            for k, v in p["by_method"].items()
        )
        out.append(
            f"<p><b>Planted traces</b> ({p['n']}; chance mean rank {_num(p['chance_mean_rank'], 2)}, "
            f"chance top-1 {_num(p['chance_top1'], 2)})</p><table><tr><th>method</th>"
            f"<th>mean rank of planted [95% CI]</th><th>top-1 [95% CI]</th></tr>{rows}</table>"
        )
    if "controls" in s:
        by = s["controls"].get("false_anchor_rate_by_method", {})
        cells = "".join(
            f"<tr><td>{k}</td><td>{c['k']}/{c['n']} "
            f"[{_num(c['ci'][0], 2)}, {_num(c['ci'][1], 2)}]</td></tr>"
            for k, c in by.items()
        )
        out.append(
            "<p><b>Controls</b>: false-anchor rate (controls with any sentence flagged)</p>"
            f"<table><tr><th>method</th><th>rate [95% CI]</th></tr>{cells}</table>"
        )
    if s.get("agreement"):
        rows = "".join(
            f"<tr><td>{esc(k)}</td><td>{_num(v['mean_spearman'], 2)} [{_num(v['ci'][0], 2)}, "
            f"{_num(v['ci'][1], 2)}]</td><td>{v['n_traces']}</td></tr>"
            for k, v in s["agreement"].items()
        )
        out.append(
            f"<p><b>Agreement</b> (Spearman over sentences, mean over traces)</p><table>"
            f"<tr><th>methods</th><th>mean rho [95% CI]</th><th>traces</th></tr>{rows}</table>"
        )
    ro = s["rollouts"]
    out.append(
        f"<p>Rollouts: {ro['total']}, unscorable {ro['unscorable']} "
        f"({_num(ro['unscorable_rate'], 3)}). Skipped questions: {len(m.get('skipped', []))}.</p>"
    )
    return "\n".join(out)


def write_report(metrics: dict[str, Any], path: str | Path) -> Path:
    """Write the HTML view of ``metrics`` (the dict saved as metrics.json) to ``path``."""
    body = _summary_html(metrics) + "\n".join(_trace_html(r) for r in metrics["traces"])
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>Thought anchors</title>"
        f"<style>{CSS}</style></head><body><h1>Thought anchors</h1>{body}</body></html>"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, page)
    return path
