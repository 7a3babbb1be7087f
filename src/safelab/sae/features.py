"""A self-contained HTML page of SAE features: where they fire, how strongly, what they promote.

For each chosen latent ``i``:

- the top-activating contexts among the given texts (tokens the SAE skips, the first token and
  massive activations, never count), the maximally active token outlined and
  every token shaded by the latent's activation on it;
- a histogram of its non-zero activations (inline SVG);
- the logit effect of its decoder direction, ``W_dec[i] @ W_U`` (the unembedding, without the
  final norm, as in the direct logit attribution of the field), top promoted and suppressed tokens.

No scripts, no external files: the page opens anywhere.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from safelab.errors import SafelabError
from safelab.files import atomic_write_text
from safelab.sae.sae import SparseAutoencoder

if TYPE_CHECKING:
    from safelab.models.whitebox import WhiteBoxModel

WINDOW = 12


def check_index(sae: SparseAutoencoder, index: int, where: str = "") -> int:
    """Raise one line when ``index`` is not a latent of ``sae``."""
    if not 0 <= index < sae.d_sae:
        raise SafelabError(
            f"feature {index} is out of range for the SAE{where} ({sae.d_sae} latents): "
            f"use 0..{sae.d_sae - 1}"
        )
    return index


@torch.no_grad()
def logit_effect(
    sae: SparseAutoencoder, model: WhiteBoxModel, index: int, n: int = 10
) -> dict[str, list[tuple[str, float]]]:
    """Top ``n`` promoted and suppressed tokens of latent ``index``'s decoder direction."""
    w_u = model.hf.get_output_embeddings().weight.float()  # [vocab, d]
    scores = w_u @ sae.W_dec[check_index(sae, index)].float().to(w_u.device)
    up, down = scores.topk(n), (-scores).topk(n)
    tok = model.tokenizer
    return {
        "promoted": [
            (tok.decode([int(i)]), float(v)) for v, i in zip(up.values, up.indices, strict=True)
        ],
        "suppressed": [
            (tok.decode([int(i)]), float(-v))
            for v, i in zip(down.values, down.indices, strict=True)
        ],
    }


def feature_page(
    sae: SparseAutoencoder,
    model: WhiteBoxModel,
    texts: Sequence[Any],
    out: str | Path,
    *,
    features: Sequence[int] | None = None,
    top: int = 8,
    contexts: int = 8,
) -> Path:
    """Write the feature page for ``features`` (default: the ``top`` most often active)."""
    sae.check_fits(model)
    if features is not None:
        for i in features:
            check_index(sae, i)
    if not texts:
        raise SafelabError("no texts to read features from: give --data with at least one text")
    acts = model.capture(list(texts), sae.site, position="all")
    from safelab.sae.metrics import row_filter

    x = acts[sae.site].float()
    # Rows the SAE was trained to leave alone (first token, massive activations) read as zero.
    keep = row_filter(sae).keep(x, acts.sample, acts.position)
    with torch.no_grad():
        z = sae.encode(x) * keep[:, None]
    if features is None:
        freq = (z > 0).float().mean(0)
        features = freq.topk(min(top, sae.d_sae)).indices.tolist()
    ids_by_sample = _token_ids(acts)
    sections = [
        _section(
            sae, model, int(i), z[:, int(i)], acts.sample, acts.position, ids_by_sample, contexts
        )
        for i in features
    ]
    title = f"SAE features: {html.escape(sae.site)} ({sae.d_sae} latents)"
    doc = (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>{title}</title><style>{_CSS}</style></head><body>"
        f"<h1>{title}</h1><p class='meta'>model {html.escape(model.name)}; "
        f"{len(texts)} texts, {len(z)} tokens; {html.escape(sae.cfg.architecture)}"
        f"{', k=' + str(sae.cfg.k) if sae.cfg.k else ''}</p>" + "".join(sections) + "</body></html>"
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, doc)
    return out


def _token_ids(acts: Any) -> dict[int, dict[int, int]]:
    out: dict[int, dict[int, int]] = {}
    for s, p, t in zip(
        acts.sample.tolist(), acts.position.tolist(), acts.token.tolist(), strict=True
    ):
        out.setdefault(s, {})[p] = t
    return out


def _section(
    sae: SparseAutoencoder,
    model: WhiteBoxModel,
    index: int,
    col: Tensor,
    sample: Tensor,
    position: Tensor,
    ids: dict[int, dict[int, int]],
    contexts: int,
) -> str:
    tok = model.tokenizer
    active = col[col > 0]
    head = (
        f"<section id='f{index}'><h2>feature {index}</h2><p class='meta'>active on "
        f"{len(active)}/{len(col)} tokens ({100 * len(active) / max(1, len(col)):.2f}%); "
        f"max {float(col.max()):.3g}</p>"
    )
    rows = []
    if len(active):
        top = col.topk(min(contexts, len(active)))
        for v, r in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            s, p = int(sample[r]), int(position[r])
            per_pos = {
                int(pp): float(a)
                for pp, a in zip(
                    position[sample == s].tolist(), col[sample == s].tolist(), strict=True
                )
            }
            spans = []
            for q in range(max(0, p - WINDOW), p + 4):
                if q not in ids[s]:
                    continue
                text = html.escape(tok.decode([ids[s][q]]))
                a = per_pos.get(q, 0.0) / max(float(col.max()), 1e-9)
                cls = " class='max'" if q == p else ""
                spans.append(f"<span{cls} style='background:rgba(255,140,0,{a:.2f})'>{text}</span>")
            rows.append(
                f"<tr><td class='num'>{v:.3g}</td><td class='ctx'>{''.join(spans)}</td></tr>"
            )
    ctx = (
        "<table class='contexts'>" + "".join(rows) + "</table>"
        if rows
        else "<p>never active on these texts</p>"
    )
    eff = logit_effect(sae, model, index)
    logit = (
        "<table class='logits'><tr><th>promoted</th><th>suppressed</th></tr>"
        + "".join(
            f"<tr><td>{html.escape(a)} <span class='num'>{x:+.2f}</span></td>"
            f"<td>{html.escape(b)} <span class='num'>{-y:+.2f}</span></td></tr>"
            for (a, x), (b, y) in zip(eff["promoted"], eff["suppressed"], strict=True)
        )
        + "</table>"
    )
    return head + "<div class='row'>" + _histogram(active) + logit + "</div>" + ctx + "</section>"


def _histogram(values: Tensor, bins: int = 24, w: int = 320, h: int = 110) -> str:
    if len(values) == 0:
        return "<svg class='hist' width='320' height='110'></svg>"
    counts = torch.histc(values.float(), bins=bins, min=0.0, max=float(values.max()))
    peak = float(counts.max())
    bw = w / bins
    bars = "".join(
        f"<rect x='{i * bw:.1f}' y='{h - 14 - (h - 24) * c / peak:.1f}' width='{bw - 1:.1f}' "
        f"height='{(h - 24) * c / peak:.1f}' fill='#e8760a'/>"
        for i, c in enumerate(counts.tolist())
    )
    return (
        f"<svg class='hist' xmlns='http://www.w3.org/2000/svg' width='{w}' height='{h}'>{bars}"
        f"<text x='0' y='{h - 2}' font-size='10'>0</text>"
        f"<text x='{w - 40}' y='{h - 2}' font-size='10'>{float(values.max()):.3g}</text></svg>"
    )


_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
section{border-top:1px solid #ccc;padding:.5em 0 1em}
.meta{color:#666;font-size:.9em}.num{font-variant-numeric:tabular-nums;color:#555}
.row{display:flex;gap:2em;align-items:flex-start}
table{border-collapse:collapse;font-size:.9em}td,th{padding:2px 8px;text-align:left}
.ctx{font-family:ui-monospace,monospace;white-space:pre-wrap}
.max{outline:2px solid #c00;font-weight:bold}
"""
