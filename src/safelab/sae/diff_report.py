"""The tables of an SAE diff: markdown (for docs) and a small self-contained HTML page."""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from safelab.sae.diff import DiffResult


def _rows(self: DiffResult) -> tuple[list[str], list[list[str]]]:
    head = ["latent", "rank (mean / freq)", "mean change [95% CI]", "freq base -> organism"]
    if self.trigger:
        head += [
            "rank (trigger effect)",
            "trigger effect change [95% CI]",
            "on trigger / elsewhere",
            "trigger AUROC [95% CI]",
            "off-trigger AUROC [95% CI]",
            "base AUROC",
        ]
    rows = []
    for c in self.latents:
        row = [
            str(c.latent),
            f"{c.rank_mean} / {c.rank_freq}",
            f"{c.mean_diff:+.3f} [{c.mean_diff_ci[0]:+.3f}, {c.mean_diff_ci[1]:+.3f}]",
            f"{c.freq_base:.3f} -> {c.freq_organism:.3f}",
        ]
        if self.trigger:
            t = c.trigger
            e, e_ci = c.trigger_effect_change, c.trigger_effect_change_ci
            row += [
                str(c.rank_trigger),
                f"{e:+.3f} [{e_ci[0]:+.3f}, {e_ci[1]:+.3f}]" if e is not None and e_ci else "",
            ]
            row += (
                [
                    f"{t.mean_on_trigger:.2f} / {t.mean_elsewhere:.2f}",
                    f"{t.auroc:.2f} [{t.auroc_ci[0]:.2f}, {t.auroc_ci[1]:.2f}]",
                    f"{t.auroc_off_trigger:.2f} [{t.auroc_off_trigger_ci[0]:.2f}, "
                    f"{t.auroc_off_trigger_ci[1]:.2f}]",
                    f"{t.base_auroc:.2f}",
                ]
                if t
                else ["", "", "", ""]
            )
        rows.append(row)
    return head, rows


def diff_markdown(self: DiffResult) -> str:
    head, rows = _rows(self)
    lines = [
        f"# SAE diff: {self.organism} vs {self.base}",
        "",
        f"SAE `{self.sae}` at `{self.site}`; {self.n_prompts} prompts "
        f"({self.n_triggered} with the trigger `{self.trigger}`), {self.n_tokens} tokens; "
        f"bootstrap over prompts, {self.n_resamples} resamples, seed {self.seed}.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def diff_html(self: DiffResult) -> str:
    head, rows = _rows(self)
    cells = "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in r) + "</tr>" for r in rows
    )
    heads = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    title = html.escape(f"SAE diff: {self.organism} vs {self.base}")
    note = html.escape(diff_markdown(self).splitlines()[2])
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{title}</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}</style></head>"
        f"<body><h1>{title}</h1><p>{note}</p><table><tr>{heads}</tr>{cells}</table>"
        "</body></html>\n"
    )
