"""Prompt templates (Jinja Markdown files in ``data/``) and their rendering."""

from __future__ import annotations

from pathlib import Path

from safelab.data import package_file
from safelab.errors import SafelabError
from safelab.judging import render_prompt


def load_template(name_or_path: str) -> str:
    """Read a built-in template (``auditor.md``, ``judge.md``) or a Markdown file by path."""
    path = Path(name_or_path)
    if path.is_file():
        return path.read_text(encoding="utf-8")
    try:
        return package_file("safelab.audit", "data", name_or_path).read_text(encoding="utf-8")
    except SafelabError:
        raise SafelabError(
            f"prompt template {name_or_path!r} not found; pass a Markdown file path"
        ) from None


def render(template: str, **values: object) -> str:
    """Fill ``{{ name }}`` variables in one pass (:func:`safelab.judging.render_prompt`).

    Text inserted for a variable is never re-substituted; other braces (JSON in a transcript)
    are left alone; a variable the template uses but ``values`` lacks is an error.
    """
    return render_prompt(template, "audit prompt", **values)
