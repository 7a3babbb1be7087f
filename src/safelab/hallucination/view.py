"""An HTML page of answers: each token coloured by the probe's score, the true label beside it.

Self-contained (inline CSS, no script): every answer is a row with the question, the answer's
tokens (background from white, score 0, to red, score 1; the labelled attribute span boxed),
the stated attribute, the table's valid attributes, the label (supported / fabricated /
excluded) and the span's probe and baseline scores.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from safelab.files import atomic_write_text
from safelab.hallucination.matching import token_char_offsets

if TYPE_CHECKING:
    from safelab.hallucination.collect import Answer, TokenFeatures
    from safelab.hallucination.evaluate import Span
    from safelab.interp.probes import LinearProbe

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; width: 100%; }
td, th { border-bottom: 1px solid #ddd; padding: 6px; vertical-align: top; text-align: left; }
.tok { white-space: pre-wrap; font-family: ui-monospace, monospace; }
.span { outline: 2px solid #333; }
.fabricated { color: #b00020; font-weight: 600; }
.supported { color: #1b5e20; font-weight: 600; }
.excluded { color: #777; }
.legend span { padding: 2px 8px; }
"""


def _colour(score: float) -> str:
    s = min(max(score, 0.0), 1.0)
    g = int(255 * (1 - s))
    return f"rgb(255,{g},{g})"


def answer_tokens(answer: Answer, tokenizer: Any) -> list[str]:
    """The answer's token texts (exact characters; see ``token_char_offsets``)."""
    offsets = token_char_offsets(tokenizer, answer.completion_ids)
    return [answer.text[a:b] for a, b in offsets]


def write_view(
    path: Path,
    answers: Sequence[Answer],
    spans: Sequence[Span],
    feats: TokenFeatures,
    probe: LinearProbe | None,
    tokenizer: Any,
    metrics: dict[str, Any],
) -> Path:
    """Write the page to ``path`` (atomically)."""
    by_answer = {s.answer: s for s in spans}
    rows = []
    for i, a in enumerate(answers):
        span = by_answer.get(i)
        tokens = answer_tokens(a, tokenizer)
        scores: list[float] = []
        if probe is not None:
            r = feats.rows(i)
            scores = probe.score(feats.acts[probe.site][r]).tolist() if len(r) else []
        cells = []
        for k, t in enumerate(tokens):
            style = f' style="background:{_colour(scores[k])}"' if k < len(scores) else ""
            title = f' title="{scores[k]:.3f}"' if k < len(scores) else ""
            cls = "tok span" if span is not None and k in span.tokens else "tok"
            cells.append(f'<span class="{cls}"{style}{title}>{html.escape(t)}</span>')
        if span is None:
            label, stated, sc = '<span class="excluded">excluded</span>', "", ""
        else:
            name = "fabricated" if span.label else "supported"
            label = f'<span class="{name}" data-label="{name}">{name}</span>'
            stated = html.escape(span.attribute)
            sc = ", ".join(f"{k} {v:.3f}" for k, v in span.scores.items())
        rows.append(
            f"<tr><td>{html.escape(a.table)}</td><td>{html.escape(a.question)}</td>"
            f'<td class="answer">{"".join(cells)}</td><td>{stated}</td><td>{label}</td>'
            f"<td>{html.escape(sc)}</td></tr>"
        )
    main = metrics.get("main") or {}
    head = ""
    if main:
        parts = [
            f"{name} {r['auroc']:.3f} [{r['auroc_ci'][0]:.3f}, {r['auroc_ci'][1]:.3f}]"
            for name, r in {"probe": main["probe"], **main.get("baselines", {})}.items()
        ]
        head = f"<p>Held-out span AUROC [95% CI]: {html.escape('; '.join(parts))}</p>"
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>hallucination probe: answers</title>
<style>{CSS}</style></head><body>
<h1>Hallucination probe on the model's own answers</h1>
<p>{len(answers)} answers, {len(spans)} labelled spans ({sum(s.label for s in spans)} fabricated);
model {html.escape(str(metrics.get("model", "")))}; probe
{html.escape(probe.site if probe else "none")}. Token background: probe score
(white 0 to red 1; hover for the value); the boxed tokens are the labelled attribute span.</p>
{head}
<p class="legend"><span style="background:{_colour(0)}">0.0</span><span
style="background:{_colour(0.5)}">0.5</span><span style="background:{_colour(1)}">1.0</span></p>
<table id="answers"><thead><tr><th>table</th><th>question</th><th>answer (probe score per token)</th>
<th>stated</th><th>true label</th><th>span scores</th></tr></thead><tbody>
{"".join(rows)}
</tbody></table></body></html>
"""
    atomic_write_text(path, page)
    return path
