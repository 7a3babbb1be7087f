"""A self-contained HTML page for one audit: its branches and the judge's quoted highlights."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inspect_ai.log import EvalLog, EvalSample
from inspect_ai.model import ChatMessage, ChatMessageAssistant, ChatMessageTool, ChatMessageUser
from inspect_ai.tool import ToolInfo
from jinja2 import Environment
from markupsafe import Markup, escape

from safelab.audit.auditor import STORE_KEY
from safelab.audit.conversation import Branch, format_tool_call, message_text
from safelab.audit.dimensions import load_dimensions
from safelab.data import read_package_text
from safelab.errors import SafelabError
from safelab.files import atomic_write_text

SCORER = "audit_judge"


@dataclass(frozen=True)
class Highlight:
    """A quote the judge gave for a dimension, found in the transcript."""

    dimension: str
    quote: str


def load_log(log: EvalLog | str | Path) -> EvalLog:
    """Read an Inspect log (a path) or pass an already loaded one through."""
    if isinstance(log, EvalLog):
        return log
    from safelab.evals.results import read_log

    return read_log(log)


def audit_samples(log: EvalLog) -> list[EvalSample]:
    """Samples of a ``safelab/audit`` log that carry an audit record."""
    return [s for s in (log.samples or []) if isinstance(s.store.get(STORE_KEY), dict)]


def select_sample(
    log: EvalLog, sample: int | None = None, sample_id: str | None = None
) -> EvalSample:
    """Pick an audit sample by 1-based position or by sample id."""
    samples = audit_samples(log)
    if not samples:
        raise SafelabError(
            f"log {log.location or ''} has no audit samples; pass a log written by safelab/audit"
        )
    if sample_id is not None:
        for s in samples:
            if str(s.id) == sample_id:
                return s
        raise SafelabError(
            f"no audit sample with id {sample_id!r}; ids: {[str(s.id) for s in samples][:20]}"
        )
    n = 1 if sample is None else sample
    if not 1 <= n <= len(samples):
        raise SafelabError(
            f"--sample {n} is out of range; the log has {len(samples)} audit samples (1..{len(samples)})"
        )
    return samples[n - 1]


def _mark(text: str, highlights: list[Highlight]) -> Markup:
    """Escape ``text`` and wrap each quoted highlight in ``<mark>`` (overlaps are merged)."""
    spans: list[tuple[int, int, set[str]]] = []
    for h in highlights:
        words = h.quote.split()
        if not words:
            continue
        pattern = re.compile(r"\s+".join(re.escape(w) for w in words), re.IGNORECASE)
        spans.extend((m.start(), m.end(), {h.dimension}) for m in pattern.finditer(text))
    merged: list[tuple[int, int, set[str]]] = []
    for start, end, dims in sorted(spans, key=lambda x: (x[0], -x[1])):
        if merged and start < merged[-1][1]:
            last = merged[-1]
            merged[-1] = (last[0], max(last[1], end), last[2] | dims)
        else:
            merged.append((start, end, set(dims)))
    out = Markup("")
    pos = 0
    for start, end, dims in merged:
        title = ", ".join(sorted(dims))
        out += escape(text[pos:start]) + Markup(f'<mark title="{escape(title)}">')
        out += escape(text[start:end]) + Markup("</mark>")
        pos = end
    return out + escape(text[pos:])


def _branch_view(branch: Branch, final: bool, highlights: list[Highlight]) -> dict[str, Any]:
    msgs = []
    for i, m in enumerate(branch.messages[branch.fork_at :], start=branch.fork_at):
        meta = m.metadata or {}
        text = message_text(m)
        who = {
            "system": "system prompt (auditor)",
            "user": "user (auditor)",
            "assistant": "target",
            "tool": "tool result (auditor)",
        }[m.role]
        calls: list[str] = []
        if isinstance(m, ChatMessageAssistant):
            calls = [format_tool_call(c) for c in m.tool_calls or []]
            prefill = meta.get("prefill")
            if prefill and text.startswith(prefill):
                html = (
                    Markup('<span class="prefill" title="prefill written by the auditor">')
                    + escape(prefill)
                    + Markup("</span>")
                    + _mark(text[len(prefill) :], highlights)
                )
            else:
                html = _mark(text, highlights)
        else:
            html = Markup(escape(text))
        if isinstance(m, ChatMessageTool):
            who = f"tool result for {m.function} [{m.tool_call_id}] (auditor)" + (
                ", error" if m.error else ""
            )
        if isinstance(m, ChatMessageUser) and meta.get("fallback"):
            who += ", text sent without a tool call"
        msgs.append(
            {
                "index": i,
                "role": m.role,
                "who": who,
                "html": html,
                "calls": calls,
                "fallback": bool(meta.get("fallback")),
            }
        )
    return {
        "id": branch.id,
        "parent": branch.parent,
        "fork_at": branch.fork_at,
        "reason": branch.reason,
        "final": final,
        "messages": msgs,
    }


def _auditor_view(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    out = []
    for m in messages:
        calls = (
            [format_tool_call(c) for c in m.tool_calls or []]
            if isinstance(m, ChatMessageAssistant)
            else []
        )
        who = (
            m.role
            if not isinstance(m, ChatMessageTool)
            else f"tool result: {m.function}" + (" (error)" if m.error else "")
        )
        text = message_text(m)
        if isinstance(m, ChatMessageTool) and m.error:
            text = (text + "\n" + m.error.message).strip()
        out.append({"role": m.role, "who": who, "text": text, "calls": calls})
    return out


def render_audit_html(
    log: EvalLog | str | Path, sample: int | None = None, sample_id: str | None = None
) -> str:
    """Render one audit sample of an Inspect log as a self-contained HTML page."""
    eval_log = load_log(log)
    s = select_sample(eval_log, sample, sample_id)
    record: dict[str, Any] = s.store[STORE_KEY]
    branches = [Branch.from_dict(b) for b in record.get("branches", [])]
    tools = [ToolInfo.model_validate(t) for t in record.get("tools", [])]
    score = (s.scores or {}).get(SCORER)
    meta: dict[str, Any] = dict(score.metadata or {}) if score is not None else {}
    verdicts: dict[str, Any] = meta.get("dimensions", {})
    titles = {d.name: d.title for d in load_dimensions().dimensions}
    dims = []
    highlights: list[Highlight] = []
    for name, v in verdicts.items():
        sc = v.get("score")
        css = "s-none" if sc is None else "s-low" if sc <= 3 else "s-mid" if sc <= 6 else "s-high"
        dims.append({**v, "title": titles.get(name, name), "css": css})
        if v.get("quote_found") and v.get("quote"):
            highlights.append(Highlight(name, str(v["quote"])))
    roles = {
        role: ", ".join(
            str(getattr(c, "model", c)) for c in (cfg if isinstance(cfg, list) else [cfg])
        )
        for role, cfg in (eval_log.eval.model_roles or {}).items()
    }
    metadata = s.metadata or {}
    env = Environment(autoescape=True)
    template = env.from_string(read_package_text("safelab.audit", "data", "view.html.jinja"))
    return template.render(
        seed_id=str(s.id),
        seed=s.input if isinstance(s.input, str) else message_text(s.input[0]),
        tags=metadata.get("tags", []),
        target_model=record.get("target_model", eval_log.eval.model),
        roles=roles,
        record=record,
        log_name=Path(eval_log.location).name if eval_log.location else "",
        sample_id=str(s.id),
        epoch=s.epoch,
        status=meta.get("judge_status", "not judged"),
        unscored=meta.get("unscored", []),
        summary=score.explanation
        if score is not None and meta.get("judge_status") in ("scored", "partial")
        else "",
        judge_error=meta.get("judge_error", ""),
        judge_raw=meta.get("judge_raw", ""),
        judge_budgets=meta.get("judge_budgets"),
        judge_calls=meta.get("judge_calls", 0),
        dims=dims,
        tools=[
            {"name": t.name, "description": t.description, "params": list(t.parameters.properties)}
            for t in tools
        ],
        branches=[
            _branch_view(b, i == len(branches) - 1, highlights) for i, b in enumerate(branches)
        ],
        auditor_messages=_auditor_view(s.messages),
    )


def write_audit_html(
    log: EvalLog | str | Path,
    out: str | Path,
    sample: int | None = None,
    sample_id: str | None = None,
) -> Path:
    """Write :func:`render_audit_html` to ``out`` atomically; returns the path."""
    html = render_audit_html(log, sample, sample_id)
    return atomic_write_text(out, html)
