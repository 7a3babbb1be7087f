"""Prompt templates (Markdown files in ``data/``) and their rendering."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from safelab.errors import SafelabError


def load_template(name_or_path: str) -> str:
    """Read a built-in template (``auditor.md``, ``judge.md``) or a Markdown file by path."""
    path = Path(name_or_path)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    builtin = resources.files("safelab.audit") / "data" / name_or_path
    if builtin.is_file():
        return builtin.read_text(encoding="utf-8")
    raise SafelabError(f"prompt template {name_or_path!r} not found; pass a Markdown file path")


def render(template: str, **values: object) -> str:
    """Fill ``{name}`` placeholders; other braces (JSON in a transcript) are left alone."""
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", str(value))
    return out
