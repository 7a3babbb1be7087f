"""Prompt templates (Markdown files in ``data/``) and their rendering."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

from safelab.errors import SafelabError

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


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
    # One pass, so text inserted for one placeholder is never re-substituted.
    return _PLACEHOLDER.sub(
        lambda m: str(values[m.group(1)]) if m.group(1) in values else m.group(0), template
    )
